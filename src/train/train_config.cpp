#include "moejet/train/train_config.h"

#include <cmath>

#include "moejet/kernels/precision.h"

namespace moejet::train {

void TrainConfig::validate() const {
  model.validate();
  const auto& t = train;
  const auto& o = optim;
  // Bounds that keep step counts far from overflow, and every rate a finite number.
  check<ConfigError>(t.epochs > 0 && t.epochs <= 1'000'000, "config 'train.epochs': must be in [1, 1e6], got {}",
                     t.epochs);
  check<ConfigError>(t.max_steps >= 0, "config 'train.max_steps': must be >= 0, got {}", t.max_steps);
  check<ConfigError>(t.threads >= 0 && t.threads <= 1024, "config 'train.threads': must be in [0, 1024], got {}",
                     t.threads);
  kernels::resolve_precision(t.precision, torch::kCPU, "config 'train.precision'");  // a bad name throws
  check<ConfigError>(std::isfinite(o.lr) && std::isfinite(o.min_lr) && std::isfinite(o.warmup_lr) &&
                         std::isfinite(o.weight_decay) && std::isfinite(o.clip_grad),
                     "config 'optim': lr, min_lr, warmup_lr, weight_decay and clip_grad must be finite");
  check<ConfigError>(o.min_lr >= 0 && o.warmup_lr >= 0,
                     "config 'optim.min_lr'/'optim.warmup_lr': must be >= 0, "
                     "got {} / {}",
                     o.min_lr, o.warmup_lr);
  check<ConfigError>(t.batch_size > 0, "config 'train.batch_size': must be > 0, got {}", t.batch_size);
  check<ConfigError>(t.accum_steps > 0, "config 'train.accum_steps': must be > 0, got {}", t.accum_steps);
  check<ConfigError>(t.label_smoothing >= 0 && t.label_smoothing < 1,
                     "config 'train.label_smoothing': must be in [0, 1), got {}", t.label_smoothing);
  check<ConfigError>(t.superclasses.empty() || model.moe().type() == "image",
                     "config 'train.superclasses' supervises Mobile V-MoE's per-image router: it needs "
                     "model.moe.type \"image\", not \"{}\"",
                     model.moe().type());
  check<ConfigError>(t.router_loss_weight >= 0, "config 'train.router_loss_weight': must be >= 0");
  check<ConfigError>(t.log_every > 0 && t.eval_every > 0, "config 'train.log_every'/'train.eval_every': must be > 0");
  check<ConfigError>(t.eval_batch_size >= 0,
                     "config 'train.eval_batch_size': must be >= 0 (0 = train.batch_size), got {}", t.eval_batch_size);
  check<ConfigError>(t.checkpoint_every >= 0, "config 'train.checkpoint_every': must be >= 0, got {}",
                     t.checkpoint_every);
  check<ConfigError>(o.opt == "adamw" || o.opt == "sgd",
                     "config 'optim.opt': expected \"adamw\" or \"sgd\", got \"{}\"", o.opt);
  check<ConfigError>(o.lr > 0, "config 'optim.lr': must be > 0, got {}", o.lr);
  check<ConfigError>(o.weight_decay >= 0, "config 'optim.weight_decay': must be >= 0, got {}", o.weight_decay);
  check<ConfigError>(o.layer_decay > 0 && o.layer_decay <= 1, "config 'optim.layer_decay': must be in (0, 1], got {}",
                     o.layer_decay);
  check<ConfigError>(o.moe_layer_decay == "top" || o.moe_layer_decay == "block",
                     "config 'optim.moe_layer_decay': expected top or block, got \"{}\"", o.moe_layer_decay);
  check<ConfigError>(o.weight_decay_groups == "jetpack" || o.weight_decay_groups == "timm",
                     "config 'optim.weight_decay_groups': expected jetpack or timm, got \"{}\"", o.weight_decay_groups);
  check<ConfigError>(o.clip_grad >= 0, "config 'optim.clip_grad': must be >= 0, got {}", o.clip_grad);
  check<ConfigError>(o.sched_unit == "step" || o.sched_unit == "epoch",
                     "config 'optim.sched_unit': expected \"step\" or \"epoch\", got \"{}\"", o.sched_unit);
  check<ConfigError>(o.sched == "cosine" || o.sched == "constant",
                     "config 'optim.sched': expected \"cosine\" or \"constant\", got \"{}\"", o.sched);
  check<ConfigError>(o.warmup_epochs >= 0 && o.warmup_epochs <= t.epochs,
                     "config 'optim.warmup_epochs': must be in [0, epochs], got {}", o.warmup_epochs);
  check<ConfigError>(o.betas.size() == 2, "config 'optim.betas': expected 2 values, got {}", o.betas.size());
  data.validate();
  augment.validate("augment");
}

json to_json(const TrainConfig& c) {
  return config_to_json(c);
}

TrainConfig train_config_from_json(const json& j) {
  TrainConfig c;
  read_config(j, c, "");
  c.validate();
  return c;
}

}  // namespace moejet::train
