#pragma once
// Classification evaluation: top-1/top-5 accuracy, mean loss, per-class accuracy and the
// confusion matrix (rows = true class, columns = predicted). The confusion matrix is what the
// Mobile V-MoE recipe clusters into super-classes, so it is saved as both CSV and JSON.

#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/core/json_util.h"
#include "moejet/core/progress.h"
#include "moejet/data/loader.h"

namespace moejet::eval {

struct EvalResult {
  int64_t count = 0;
  double top1 = 0.0;        ///< percent
  double top5 = 0.0;        ///< percent (top-k with k = min(5, classes))
  double loss = 0.0;        ///< mean cross-entropy (no smoothing)
  torch::Tensor confusion;  ///< int64 [K, K]
  /// Mobile V-MoE: accuracy (percent) of the per-image router on the E-way super-class task;
  /// negative when not measured.
  double router_top1 = -1.0;
  std::vector<double> per_class_accuracy() const;  ///< percent; NaN for classes without samples
  json to_json(const std::vector<std::string>& class_names) const;
  /// The terminal summary: "<data>: N images, top1 .., top5 .., loss .." then the router's
  /// accuracy on its `router_ways` super-classes (when measured) and one line per class.
  std::string summary(const std::string& data, const std::vector<std::string>& class_names,
                      int64_t router_ways = 0) const;
};

/// Accumulates predictions batch by batch.
class ConfusionAccumulator {
 public:
  explicit ConfusionAccumulator(int64_t num_classes);
  /// logits [B, K], labels int64 [B]
  void add(const torch::Tensor& logits, const torch::Tensor& labels);
  EvalResult result() const;

 private:
  int64_t k_;
  int64_t count_ = 0, correct1_ = 0, correct5_ = 0;
  double loss_sum_ = 0.0;
  torch::Tensor confusion_;
};

using ForwardFn = std::function<torch::Tensor(const torch::Tensor&)>;

/// Router logits [B, E] of the forward just run (Mobile V-MoE), for router accuracy.
using RouterFn = std::function<torch::Tensor()>;

/// Runs `forward` (already in eval mode) over one epoch of `loader` without gradients. With
/// `router` and `superclass_of` ([K] int64: the super-class of each class) it also measures the
/// router's accuracy against the super-class of each label. Progress goes to `progress` (null: none).
EvalResult evaluate(const ForwardFn& forward, data::Loader& loader, int64_t num_classes, torch::Device device,
                    ProgressReporter* progress = nullptr, const RouterFn& router = nullptr,
                    const torch::Tensor& superclass_of = {});

/// Writes the confusion matrix as CSV with class names as header/first column (atomic).
void write_confusion_csv(const std::string& path, const torch::Tensor& confusion,
                         const std::vector<std::string>& class_names);

}  // namespace moejet::eval
