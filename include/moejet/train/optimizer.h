#pragma once
// Optimizer construction with parameter groups by weight decay and layer-wise learning-rate decay
// (scale = layer_decay ^ (num_layers - 1 - layer_id)), so that the embeddings of a pre-trained
// checkpoint move least and the head most. Two rules for weight decay (optim.weight_decay_groups):
// the MoE Jetpack authors' (MMPretrain's constructor with their custom keys, the default) and
// timm's (no decay on 1-D parameters, biases and the model's no_weight_decay() names). Under
// layer decay, MoE parameters take the top layer id by default, as the authors' get_layer_depth.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "moejet/models/classifier.h"
#include "moejet/train/train_config.h"

namespace moejet::train {

struct ParamGroupInfo {
  double lr_scale = 1.0;
  double weight_decay = 0.0;
  std::vector<std::string> names;
};

struct OptimizerBundle {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::vector<ParamGroupInfo> groups;  ///< same order as optimizer->param_groups()
  /// Sets every group's lr to lr * its scale.
  void set_lr(double lr);
};

struct ParamGroupRules {
  std::function<int64_t(const std::string&)> layer_id;  ///< null = one layer
  int64_t num_layers = 1;
  std::vector<std::string> no_weight_decay;
  /// Whether a parameter gets weight decay; null = timm's rule (not 1-D, not a bias, not named
  /// in no_weight_decay).
  std::function<bool(const std::string&, const torch::Tensor&)> decays;
};

/// Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True), which libtorch 1.13
/// lacks): the next backward writes fresh gradients instead of reading and adding to zeroed ones,
/// one full pass over parameter-sized memory less per step.
void clear_grads(torch::optim::Optimizer& optimizer);

/// Groups `named_params` (only those requiring grad) by (layer, decay) and builds the optimizer.
OptimizerBundle make_optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                               const OptimConfig& config, const ParamGroupRules& rules);

/// The rules `config` asks for on `model` (which must outlive them): layer ids (MoE parameters at
/// the top with moe_layer_decay "top") and the weight-decay rule.
ParamGroupRules param_group_rules(models::ImageClassifierImpl& model, const OptimConfig& config);

/// make_optimizer with param_group_rules(model, config).
OptimizerBundle make_optimizer(models::ImageClassifierImpl& model, const OptimConfig& config);

/// Per-optimizer-step learning rate: linear warm-up from warmup_lr, then cosine to min_lr (or
/// constant), as timm's CosineLRScheduler with t_in_epochs=False; with sched_unit "epoch" the
/// cosine holds its value for an epoch, taken at the epoch's first step (or the warm-up's end).
class LrSchedule {
 public:
  LrSchedule(const OptimConfig& config, int64_t total_steps, int64_t warmup_steps, int64_t steps_per_epoch = 0);
  double at(int64_t step) const;
  int64_t total_steps() const {
    return total_;
  }

 private:
  OptimConfig config_;
  int64_t total_, warmup_, steps_per_epoch_;
};

}  // namespace moejet::train
