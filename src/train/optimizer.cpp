#include "moejet/train/optimizer.h"

#include <cmath>
#include <map>

#include <torch/torch.h>

#include "moejet/train/fused_adamw.h"

namespace moejet::train {

void clear_grads(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      p.mutable_grad() = torch::Tensor();
    }
  }
}

void OptimizerBundle::set_lr(double lr) {
  auto& pg = optimizer->param_groups();
  for (size_t i = 0; i < pg.size(); ++i) {
    pg[i].options().set_lr(lr * groups[i].lr_scale);
  }
}

OptimizerBundle make_optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                               const OptimConfig& config, const ParamGroupRules& rules) {
  // (layer id, decays?) -> group; std::map keeps group order deterministic for checkpoints.
  std::map<std::pair<int64_t, bool>, std::pair<ParamGroupInfo, std::vector<torch::Tensor>>> by_key;
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) {
      continue;
    }
    bool no_wd = p.dim() <= 1 || (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
    for (const auto& n : rules.no_weight_decay) {
      no_wd = no_wd || name == n;
    }
    int64_t layer = rules.layer_id ? rules.layer_id(name) : 0;
    auto& entry = by_key[{layer, !no_wd}];
    entry.first.names.push_back(name);
    entry.first.weight_decay = no_wd ? 0.0 : config.weight_decay;
    const int64_t top = std::max<int64_t>(rules.num_layers - 1, 0);
    entry.first.lr_scale = std::pow(config.layer_decay, static_cast<double>(top - layer));
    entry.second.push_back(p);
  }
  OptimizerBundle bundle;
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto& [key, entry] : by_key) {
    if (config.opt == "adamw") {
      auto opts = std::make_unique<torch::optim::AdamWOptions>(config.lr * entry.first.lr_scale);
      opts->betas({config.beta1, config.beta2}).eps(config.eps).weight_decay(entry.first.weight_decay);
      groups.emplace_back(entry.second, std::move(opts));
    } else {
      auto opts = std::make_unique<torch::optim::SGDOptions>(config.lr * entry.first.lr_scale);
      opts->momentum(config.momentum).weight_decay(entry.first.weight_decay).nesterov(config.momentum > 0);
      groups.emplace_back(entry.second, std::move(opts));
    }
    bundle.groups.push_back(entry.first);
  }
  if (config.opt == "adamw") {
    bundle.optimizer = std::make_unique<FusedAdamW>(
        groups, torch::optim::AdamWOptions(config.lr).betas({config.beta1, config.beta2}).eps(config.eps));
  } else {
    bundle.optimizer = std::make_unique<torch::optim::SGD>(
        groups, torch::optim::SGDOptions(config.lr).momentum(config.momentum));
  }
  return bundle;
}

OptimizerBundle make_optimizer(models::ImageClassifierImpl& model, const OptimConfig& config) {
  ParamGroupRules rules;
  rules.layer_id = [&model](const std::string& n) { return model.layer_id(n); };
  rules.num_layers = model.num_layers();
  rules.no_weight_decay = model.no_weight_decay();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model.named_parameters()) {
    named.emplace_back(item.key(), item.value());
  }
  // The layer_id closure is only used while grouping, so holding `model` by reference is safe.
  return make_optimizer(named, config, rules);
}

LrSchedule::LrSchedule(const OptimConfig& config, int64_t total_steps, int64_t warmup_steps)
    : config_(config), total_(std::max<int64_t>(total_steps, 1)), warmup_(std::max<int64_t>(warmup_steps, 0)) {}

double LrSchedule::at(int64_t step) const {
  const double lr = config_.lr;
  if (step < warmup_) {
    return config_.warmup_lr + (lr - config_.warmup_lr) * static_cast<double>(step) / warmup_;
  }
  if (config_.sched == "constant") {
    return lr;
  }
  const double span = static_cast<double>(std::max<int64_t>(total_ - warmup_, 1));
  const double t = std::min(static_cast<double>(step - warmup_) / span, 1.0);
  return config_.min_lr + 0.5 * (lr - config_.min_lr) * (1.0 + std::cos(M_PI * t));
}

}  // namespace moejet::train
