#include "moejet/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/strings.h"

#include "moejet/train/fused_adamw.h"

namespace moejet::train {

namespace {

bool starts_with_any(const std::string& s, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return s.rfind(p, 0) == 0; });
}

}  // namespace

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
    bool no_wd = false;
    if (rules.decays) {
      no_wd = !rules.decays(name, p);
    } else {
      no_wd = p.dim() <= 1 || ends_with(name, ".bias");
      for (const auto& n : rules.no_weight_decay) {
        no_wd = no_wd || name == n;
      }
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
      opts->betas({config.betas.at(0), config.betas.at(1)}).eps(config.eps).weight_decay(entry.first.weight_decay);
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
        groups, torch::optim::AdamWOptions(config.lr).betas({config.betas.at(0), config.betas.at(1)}).eps(config.eps));
  } else {
    bundle.optimizer =
        std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(config.lr).momentum(config.momentum));
  }
  return bundle;
}

ParamGroupRules param_group_rules(models::ImageClassifierImpl& model, const OptimConfig& config) {
  ParamGroupRules rules;
  rules.num_layers = model.num_layers();
  rules.no_weight_decay = model.no_weight_decay();
  // The MoE layers and the norm in front of each (the authors list norm2 of blocks 6-11, their
  // MoE blocks, by hand; here it is every MoE block's).
  std::vector<std::string> moe_prefixes;
  if (config.moe_layer_decay == "top") {
    for (const auto& entry : model.moe_layer_list) {
      moe_prefixes.push_back(model.mlp_key(entry.first) + ".");
      moe_prefixes.push_back(model.mlp_norm_key(entry.first) + ".");
    }
  }
  const int64_t top = model.num_layers() - 1;
  rules.layer_id = [&model, moe_prefixes, top](const std::string& n) {
    return starts_with_any(n, moe_prefixes) ? top : model.layer_id(n);
  };
  if (config.weight_decay_groups == "jetpack") {
    // MMPretrain's rule with the authors' custom keys (vit_tiny_dual_moe_timm_21k_ft.py): no decay
    // on parameters of norm layers, on biases, on pos_embed and on the temperatures (mlp.scales);
    // their custom key for mlp.slot_norm, which sets only an lr multiplier, takes the slot norm out
    // of the norm rule, so it is decayed, as cls_token (commented out of their no-decay keys) is.
    std::set<std::string> norm_params;
    for (const auto& item : model.named_modules("", /*include_self=*/false)) {
      if (item.value()->name().find("LayerNorm") == std::string::npos) {
        continue;
      }
      for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
        norm_params.insert(item.key() + "." + p.key());
      }
    }
    rules.decays = [norm_params](const std::string& n, const torch::Tensor&) {
      if (n.find(".slot_norm.") != std::string::npos) {
        return true;
      }
      return !(norm_params.count(n) > 0 || ends_with(n, ".bias") || n == "pos_embed" ||
               ends_with(n, ".dispatch_temperature") || ends_with(n, ".combine_temperature"));
    };
  }
  return rules;
}

OptimizerBundle make_optimizer(models::ImageClassifierImpl& model, const OptimConfig& config) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model.named_parameters()) {
    named.emplace_back(item.key(), item.value());
  }
  // The rules' closures are only used while grouping, so holding `model` by reference is safe.
  return make_optimizer(named, config, param_group_rules(model, config));
}

LrSchedule::LrSchedule(const OptimConfig& config, int64_t total_steps, int64_t warmup_steps, int64_t steps_per_epoch)
    : config_(config),
      total_(std::max<int64_t>(total_steps, 1)),
      warmup_(std::max<int64_t>(warmup_steps, 0)),
      steps_per_epoch_(steps_per_epoch) {
  check<ConfigError>(config.sched_unit != "epoch" || steps_per_epoch > 0,
                     "optim.sched_unit \"epoch\" needs the number of steps per epoch");
}

double LrSchedule::at(int64_t step) const {
  const double lr = config_.lr;
  if (step < warmup_) {
    return config_.warmup_lr + (lr - config_.warmup_lr) * static_cast<double>(step) / warmup_;
  }
  if (config_.sched == "constant") {
    return lr;
  }
  const double span = static_cast<double>(std::max<int64_t>(total_ - warmup_, 1));
  if (config_.sched_unit == "epoch") {
    step = std::max(warmup_, step / steps_per_epoch_ * steps_per_epoch_);
  }
  const double t = std::min(static_cast<double>(step - warmup_) / span, 1.0);
  return config_.min_lr + 0.5 * (lr - config_.min_lr) * (1.0 + std::cos(M_PI * t));
}

}  // namespace moejet::train
