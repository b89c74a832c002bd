#pragma once
// What evaluating a checkpoint needs beside its weights, read from what training stored with them:
// the eval preprocessing (timm's pretrained_cfg form), the data section it was trained on, and the
// super-classes a Mobile V-MoE router learnt. Each can be given instead (a timm checkpoint stores
// none), and the caller logs where each value came from.

#include <optional>
#include <string>
#include <vector>

#include "moejet/data/data_config.h"
#include "moejet/data/preprocess.h"
#include "moejet/data/superclasses.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/model_config.h"

namespace moejet::eval {

/// Preprocessing values given on the command line; unset ones keep the resolved value.
struct PreprocessOverrides {
  std::vector<double> mean, std;  ///< one value (broadcast) or one per channel
  double crop_pct = 0.0;          ///< 0: unset
  std::string interpolation;
  bool any() const {
    return !mean.empty() || !std.empty() || crop_pct > 0 || !interpolation.empty();
  }
};

struct ResolvedPreprocess {
  data::Preprocess preprocess;
  std::string source;  ///< e.g. "stored in the checkpoint, with flags"
};

/// The preprocessing for `model` loaded from `checkpoint` (`metadata`): the one it stores, else
/// timm's defaults for `preset`, else moejet's; then `overrides`; at the model's input size.
ResolvedPreprocess resolve_preprocess(const io::Metadata& metadata, const std::string& checkpoint,
                                      const std::string& preset, const models::ModelConfig& model,
                                      const PreprocessOverrides& overrides);

/// The data section the checkpoint was trained on; ConfigError naming it when it stores none.
data::DataConfig stored_data_config(const io::Metadata& metadata, const std::string& checkpoint);

/// Which images to evaluate on, as given on the command line; unset ones keep the stored data's.
struct DataOverrides {
  std::string dataset, split;
  std::vector<int64_t> classes, range;  ///< range: images [start, end) of the split
  int64_t max_image_pixels = -1;        ///< < 0: unset
  int64_t limit = 0;                    ///< at most this many images, class-stratified; 0: all
};

struct EvalData {
  data::DataConfig config;
  std::string split;
  data::DatasetPtr dataset;
};

/// Opens the split to evaluate the checkpoint on: `overrides` over the data it was trained on,
/// checked against the model's class count and the class names stored with its preprocessing.
EvalData open_eval_data(const io::Metadata& metadata, const std::string& checkpoint, const DataOverrides& overrides,
                        const models::ModelConfig& model, const data::Preprocess& preprocess);

/// The super-classes of a router over `num_experts` experts for `num_classes` classes: from
/// `file` when given, else those stored in the checkpoint; nullopt when neither has any.
std::optional<data::SuperClasses> resolve_superclasses(const io::Metadata& metadata, const std::string& checkpoint,
                                                       const std::string& file, int64_t num_classes,
                                                       int64_t num_experts);

}  // namespace moejet::eval
