#pragma once
// Training checkpoints. A run directory holds
//   last.safetensors / best.safetensors : model weights under timm's keys, with the model config
//       and progress counters in the safetensors metadata (loadable by `moejet eval` and by
//       `--init` with no other file);
//   last.state.pt : optimizer moments, the torch RNG state and the loop counters, for --resume.
// Both are written atomically; the state file repeats the step of its weights file so a resume
// never pairs weights with the optimizer state of another step.

#include <cstdint>
#include <string>

#include <torch/nn/module.h>

#include "moejet/core/json_util.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/model_file.h"
#include "moejet/train/optimizer.h"

namespace moejet::train {

struct TrainState {
  int64_t epoch = 0;        ///< epoch to run next
  int64_t batch = 0;        ///< batch within `epoch` to run next (0 at epoch boundaries)
  int64_t step = 0;         ///< optimizer steps done
  double best_top1 = -1.0;  ///< best eval top-1 so far (percent)
};

/// models::save_model with the progress counters (moejet.epoch, moejet.step) in the metadata;
/// `extra` metadata entries are stored too (e.g. the super-classes a router was trained on).
void save_model_checkpoint(const std::string& path, const torch::nn::Module& model, const json& model_config,
                           const TrainState& state, const io::Metadata& extra = {});

void save_train_state(const std::string& path, torch::optim::Optimizer& optimizer, const TrainState& state);
/// Restores optimizer and RNG state; throws CheckpointError naming the file on mismatch.
TrainState load_train_state(const std::string& path, torch::optim::Optimizer& optimizer);

}  // namespace moejet::train
