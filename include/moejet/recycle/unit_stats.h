#pragma once
// What checkpoint recycling knows about each hidden unit of a dense MLP: how strongly and how
// often it fires after GELU on the user's data, and which units fire together. Gathered, as in the
// MoE Jetpack code, by a hook on each MLP's activation while the dense model runs over a sample of
// images: the Euclidean norm of a unit's activations over the sample ("l2", the authors' default
// score, torch.norm(p=2)), mean |a| ("l1"), mean a^2 ("l2sq"), firing frequency ("freq": share of
// tokens on which the unit fires) and the co-activation matrix (how often units i and j fire on
// the same token), the graph that graph-partition recycling splits. A unit fires when a > 0, as in
// the authors' generator; with a firing quantile q (moejet's own option), when a is above the
// layer's q-quantile, estimated once on the first batch so that one pass over the data suffices.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/core/json_util.h"
#include "moejet/core/progress.h"
#include "moejet/data/augment.h"
#include "moejet/data/dataset.h"
#include "moejet/models/classifier.h"

namespace moejet::recycle {

struct UnitStats {
  torch::Tensor mean_abs;      ///< [H] E|a|
  torch::Tensor mean_sq;       ///< [H] E[a^2]
  torch::Tensor freq;          ///< [H] P(a > threshold)
  torch::Tensor coactivation;  ///< [H, H] P(a_i > thr and a_j > thr); undefined if not gathered
  double threshold = 0.0;      ///< activation level counted as firing
  int64_t tokens = 0;          ///< tokens the statistics are over

  /// The importance score named "l2", "l1", "l2sq" or "freq" ([H], >= 0); "l2" is sqrt(mean_sq),
  /// proportional to the Euclidean norm over the sample's tokens.
  torch::Tensor score(const std::string& kind) const;
};

/// Streaming accumulator over activations [..., H] (float, any device).
class UnitStatsAccumulator {
 public:
  /// quantile 0: a unit fires when a > `threshold`; in (0, 1): above the layer's quantile.
  UnitStatsAccumulator(int64_t hidden, double quantile = 0.0, bool coactivation = true, double threshold = 0.0);
  void add(const torch::Tensor& activations);
  UnitStats finish() const;

 private:
  int64_t hidden_;
  double quantile_;
  bool coactivation_;
  bool have_threshold_ = false;
  double threshold_ = 0.0;
  int64_t tokens_ = 0;
  torch::Tensor sum_abs_, sum_sq_, count_, co_;
};

struct StatsOptions {
  int64_t images = 2048;  ///< how many images of the data set to run
  int64_t batch_size = 128;
  double quantile = 0.0;     ///< 0: a unit fires when a > 0 (the authors'); else above this quantile
  bool coactivation = true;  ///< gather the [H, H] co-activation matrix (graph partitioning)
  int num_workers = 2;
  uint64_t seed = 0;                     ///< which images (a seeded shuffle of the data set)
  ProgressReporter* progress = nullptr;  ///< where the pass over the images reports (null: nowhere)
};

/// Runs `dense` (eval mode, no grad) over the first `images` of a seeded shuffle of `data` and
/// returns the statistics of the MLP hidden units of each block in `blocks` (which must be dense
/// MLP blocks). Throws ConfigError naming the block otherwise.
std::map<int64_t, UnitStats> collect_unit_stats(models::ImageClassifierImpl& dense, const std::vector<int64_t>& blocks,
                                                data::DatasetPtr data, data::Transform transform,
                                                const StatsOptions& options, torch::Device device);

/// What recycling from a wider checkpoint also needs, per block: the residual-stream channels
/// as the MLP sees them (norm2 output, [D]) and the attention heads' outputs before proj ([D],
/// ViT only), in the same UnitStats form as the hidden units.
struct ModelStats {
  std::map<int64_t, UnitStats> units;     ///< MLP hidden units
  std::map<int64_t, UnitStats> channels;  ///< MLP inputs (norm2 output channels)
  std::map<int64_t, UnitStats> context;   ///< attention outputs before proj (ViT)
};

/// One pass gathering units (and, with `channels`, channel and head-context statistics) of the
/// given blocks.
ModelStats collect_model_stats(models::ImageClassifierImpl& dense, const std::vector<int64_t>& blocks,
                               data::DatasetPtr data, data::Transform transform, const StatsOptions& options,
                               torch::Device device, bool channels);

}  // namespace moejet::recycle
