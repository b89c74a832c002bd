#pragma once
// The training loop behind `moejet train`: builds data, model and optimizer from a TrainConfig,
// optionally initialises from a checkpoint, trains with mixed/smoothed soft targets, gradient
// accumulation and clipping under the lr schedule, evaluates every eval_every epochs, logs JSON
// lines to <out_dir>/metrics.jsonl and checkpoints every epoch. A NaN/inf loss stops the run
// with an error and leaves the last good checkpoint in place.

#include <functional>
#include <string>

#include "moejet/data/dataset.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/classifier.h"
#include "moejet/train/distributed.h"
#include "moejet/train/train_config.h"

namespace moejet::train {

struct TrainOptions {
  bool resume = false;        ///< continue from <out_dir>/last.* if present
  bool overwrite = false;     ///< replace a run already in out_dir (otherwise an error; see run_dir.h)
  bool show_progress = true;
  /// Stop (resumably) after this many epochs of this invocation; 0 = run to the end. For
  /// time-sliced or pre-emptible jobs: the schedule stays that of the full run.
  int64_t stop_after_epochs = 0;
  /// Data-parallel run (see distributed.h): train.batch_size is the global batch, split evenly
  /// over the ranks; only rank 0 evaluates, logs and writes files.
  DistConfig dist;
};

struct TrainResult {
  double final_top1 = 0.0;
  double best_top1 = 0.0;
  int64_t steps = 0;
  int64_t epochs_run = 0;
  double train_images_per_second = 0.0;
  std::string out_dir;
  /// SIGINT or SIGTERM when a signal stopped the run early (after writing a resumable
  /// checkpoint), else 0.
  int interrupted_by = 0;
};

TrainResult run_training(const TrainConfig& config, const TrainOptions& options = {});

/// One split of the configured data set with class filtering and a seeded, class-stratified
/// limit applied.
data::DatasetPtr open_split(const DataConfig& config, const std::string& split, int64_t limit,
                            uint64_t seed);

/// At most `limit` images of `ds` (0: all): a seeded shuffle keeping at most ceil(limit / K) of
/// each of the K classes, so that a small subset has every class in the split's balance.
data::DatasetPtr stratified_subset(data::DatasetPtr ds, int64_t limit, uint64_t seed);

/// Loads weights into `model` from a timm-layout, moejet or MoE Jetpack authors' checkpoint (keys
/// mapped by models::to_moejet_layout, then adapted by the model, e.g. ViT's pos_embed resampled;
/// head dropped when `drop_head` and its shape differs). Returns the load report summary, with
/// one line per layout rewrite and adaptation.
std::string load_model_weights(models::ImageClassifierImpl& model, const std::string& path,
                               bool drop_head);
/// The same for a state dict already read from `source` (callers that also need its metadata
/// read the file once).
std::string load_model_weights(models::ImageClassifierImpl& model, io::StateDict state,
                               const std::string& source, bool drop_head);

/// Soft-target cross-entropy: mean over the batch of -sum_k t_k log softmax(z)_k.
torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace moejet::train
