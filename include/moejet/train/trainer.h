#pragma once
// The training loop behind `moejet train`: builds data, model and optimizer from a TrainConfig,
// optionally initialises from a checkpoint, trains with mixed/smoothed soft targets, gradient
// accumulation and clipping under the lr schedule, evaluates every eval_every epochs, logs JSON
// lines to <out_dir>/metrics.jsonl and checkpoints every epoch. A NaN/inf loss stops the run
// with an error and leaves the last good checkpoint in place.

#include <functional>
#include <string>

#include "moejet/core/progress.h"
#include "moejet/data/dataset.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/classifier.h"
#include "moejet/train/distributed.h"
#include "moejet/train/train_config.h"

namespace moejet::train {

struct TrainOptions {
  bool resume = false;     ///< continue from <out_dir>/last.* if present
  bool overwrite = false;  ///< replace a run already in out_dir (otherwise an error; see run_dir.h)
  /// Where epochs and evaluations report their progress (the CLI's bar); null: nowhere. Only the
  /// main process of a data-parallel run reports.
  ProgressReporter* progress = nullptr;
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

/// Soft-target cross-entropy: mean over the batch of -sum_k t_k log softmax(z)_k.
torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace moejet::train
