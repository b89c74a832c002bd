#pragma once
// Prediction on images without labels, as timm's inference.py: the top-k classes of each image with
// their softmax probabilities, and for a Mobile V-MoE the expert its router chose (the super-class
// of classes that expert was trained on). The rows come back in the loader's order and are written
// as a table for people, JSON lines or CSV for programs.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/core/json_util.h"
#include "moejet/core/progress.h"
#include "moejet/data/loader.h"
#include "moejet/eval/evaluate.h"

namespace moejet::eval {

struct Prediction {
  std::vector<int64_t> classes;  ///< top-k class indices, most probable first
  std::vector<double> probs;     ///< their softmax probabilities
  int64_t expert = -1;           ///< Mobile V-MoE: the router's expert (= super-class); -1 without a router
};

/// Runs `forward` (already in eval mode) over one epoch of `loader` (unshuffled) without gradients;
/// k is clamped to the class count. With `router`, the argmax of its logits is each image's expert.
std::vector<Prediction> predict(const ForwardFn& forward, data::Loader& loader, int64_t k, torch::Device device,
                                ProgressReporter* progress = nullptr, const RouterFn& router = nullptr);

/// What the output names: class names (index as text where unknown) and, for a Mobile V-MoE, the
/// classes of each expert's super-class.
struct PredictionLabels {
  std::vector<std::string> class_names;
  std::vector<std::vector<int64_t>> superclass_members;  ///< per expert; empty when unknown
  std::string class_name(int64_t c) const;
};

/// One JSON object per image: {"file", "top": [{"class", "name", "prob"}...], "expert",
/// "superclass": [names]} (the last two for a Mobile V-MoE).
json prediction_json(const std::string& file, const Prediction& p, const PredictionLabels& labels);

/// "table" (aligned columns: file, then class name and probability per rank), "jsonl" or "csv"
/// (file, class_1, prob_1, ..., [expert]); ConfigError for another format.
std::string format_predictions(const std::vector<std::string>& files, const std::vector<Prediction>& predictions,
                               const PredictionLabels& labels, const std::string& format);

}  // namespace moejet::eval
