#include "moejet/train/train_config.h"

#include <cmath>

namespace moejet::train {

namespace {

json data_to_json(const DataConfig& d) {
  return {{"dataset", d.dataset},         {"train_split", d.train_split},
          {"eval_split", d.eval_split},   {"classes", d.classes},
          {"train_limit", d.train_limit}, {"eval_limit", d.eval_limit},
          {"train_range", d.train_range}, {"val_split", d.val_split}, {"num_workers", d.num_workers},
          {"max_image_pixels", d.max_image_pixels}};
}

DataConfig data_from_json(const json& j) {
  check_known_keys(j, {"dataset", "train_split", "eval_split", "classes", "train_limit",
                       "eval_limit", "train_range", "val_split", "num_workers", "max_image_pixels"}, "data");
  DataConfig d;
  read_key(j, "dataset", d.dataset, "data");
  read_key(j, "train_split", d.train_split, "data");
  read_key(j, "eval_split", d.eval_split, "data");
  read_key(j, "classes", d.classes, "data");
  read_key(j, "train_limit", d.train_limit, "data");
  read_key(j, "eval_limit", d.eval_limit, "data");
  read_key(j, "train_range", d.train_range, "data");
  check<ConfigError>(d.train_range.empty() || (d.train_range.size() == 2 && d.train_range[0] >= 0 &&
                                               d.train_range[0] < d.train_range[1]),
                     "config 'data.train_range': expected [start, end) with 0 <= start < end");
  read_key(j, "val_split", d.val_split, "data");
  read_key(j, "max_image_pixels", d.max_image_pixels, "data");
  check<ConfigError>(d.max_image_pixels >= 0, "config 'data.max_image_pixels': must be >= 0 (0 = no limit), got {}",
                     d.max_image_pixels);
  check<ConfigError>(d.val_split >= 0.0 && d.val_split < 1.0, "config 'data.val_split': must be in [0, 1), got {}",
                     d.val_split);
  read_key(j, "num_workers", d.num_workers, "data");
  return d;
}

json optim_to_json(const OptimConfig& o) {
  return {{"opt", o.opt},
          {"lr", o.lr},
          {"weight_decay", o.weight_decay},
          {"betas", {o.beta1, o.beta2}},
          {"eps", o.eps},
          {"momentum", o.momentum},
          {"layer_decay", o.layer_decay},
          {"moe_layer_decay", o.moe_layer_decay},
          {"weight_decay_groups", o.weight_decay_groups},
          {"clip_grad", o.clip_grad},
          {"sched", o.sched},
          {"sched_unit", o.sched_unit},
          {"warmup_epochs", o.warmup_epochs},
          {"warmup_lr", o.warmup_lr},
          {"min_lr", o.min_lr}};
}

OptimConfig optim_from_json(const json& j) {
  check_known_keys(j, {"opt", "lr", "weight_decay", "betas", "eps", "momentum", "layer_decay", "moe_layer_decay",
                       "weight_decay_groups", "clip_grad", "sched", "sched_unit", "warmup_epochs", "warmup_lr", "min_lr"}, "optim");
  OptimConfig o;
  read_key(j, "opt", o.opt, "optim");
  read_key(j, "lr", o.lr, "optim");
  read_key(j, "weight_decay", o.weight_decay, "optim");
  std::vector<double> betas{o.beta1, o.beta2};
  read_key(j, "betas", betas, "optim");
  check<ConfigError>(betas.size() == 2, "config 'optim.betas': expected 2 values, got {}", betas.size());
  o.beta1 = betas[0];
  o.beta2 = betas[1];
  read_key(j, "eps", o.eps, "optim");
  read_key(j, "momentum", o.momentum, "optim");
  read_key(j, "layer_decay", o.layer_decay, "optim");
  read_key(j, "moe_layer_decay", o.moe_layer_decay, "optim");
  read_key(j, "weight_decay_groups", o.weight_decay_groups, "optim");
  read_key(j, "clip_grad", o.clip_grad, "optim");
  read_key(j, "sched", o.sched, "optim");
  read_key(j, "sched_unit", o.sched_unit, "optim");
  read_key(j, "warmup_epochs", o.warmup_epochs, "optim");
  read_key(j, "warmup_lr", o.warmup_lr, "optim");
  read_key(j, "min_lr", o.min_lr, "optim");
  return o;
}

json loop_to_json(const TrainLoopConfig& t) {
  return {{"epochs", t.epochs},
          {"batch_size", t.batch_size},
          {"accum_steps", t.accum_steps},
          {"label_smoothing", t.label_smoothing},
          {"seed", t.seed},
          {"device", t.device},
          {"threads", t.threads},
          {"init", t.init},
          {"init_drop_head", t.init_drop_head},
          {"out_dir", t.out_dir},
          {"log_every", t.log_every},
          {"eval_every", t.eval_every},
          {"max_steps", t.max_steps},
          {"superclasses", t.superclasses},
          {"router_loss_weight", t.router_loss_weight}};
}

TrainLoopConfig loop_from_json(const json& j) {
  check_known_keys(j, {"epochs", "batch_size", "accum_steps", "label_smoothing", "seed", "device",
                       "threads", "init", "init_drop_head", "out_dir", "log_every", "eval_every",
                       "max_steps", "superclasses", "router_loss_weight"}, "train");
  TrainLoopConfig t;
  read_key(j, "epochs", t.epochs, "train");
  read_key(j, "batch_size", t.batch_size, "train");
  read_key(j, "accum_steps", t.accum_steps, "train");
  read_key(j, "label_smoothing", t.label_smoothing, "train");
  read_key(j, "seed", t.seed, "train");
  read_key(j, "device", t.device, "train");
  read_key(j, "threads", t.threads, "train");
  read_key(j, "init", t.init, "train");
  read_key(j, "init_drop_head", t.init_drop_head, "train");
  read_key(j, "out_dir", t.out_dir, "train");
  read_key(j, "log_every", t.log_every, "train");
  read_key(j, "eval_every", t.eval_every, "train");
  read_key(j, "max_steps", t.max_steps, "train");
  read_key(j, "superclasses", t.superclasses, "train");
  read_key(j, "router_loss_weight", t.router_loss_weight, "train");
  return t;
}

}  // namespace

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
  check<ConfigError>(data.train_limit >= 0 && data.eval_limit >= 0,
                     "config 'data.train_limit'/'data.eval_limit': must be >= 0, got {} / {}", data.train_limit,
                     data.eval_limit);
  check<ConfigError>(std::isfinite(o.lr) && std::isfinite(o.min_lr) && std::isfinite(o.warmup_lr) &&
                         std::isfinite(o.weight_decay) && std::isfinite(o.clip_grad),
                     "config 'optim': lr, min_lr, warmup_lr, weight_decay and clip_grad must be finite");
  check<ConfigError>(o.min_lr >= 0 && o.warmup_lr >= 0, "config 'optim.min_lr'/'optim.warmup_lr': must be >= 0, "
                     "got {} / {}", o.min_lr, o.warmup_lr);
  check<ConfigError>(t.batch_size > 0, "config 'train.batch_size': must be > 0, got {}", t.batch_size);
  check<ConfigError>(t.accum_steps > 0, "config 'train.accum_steps': must be > 0, got {}", t.accum_steps);
  check<ConfigError>(t.label_smoothing >= 0 && t.label_smoothing < 1,
                     "config 'train.label_smoothing': must be in [0, 1), got {}", t.label_smoothing);
  check<ConfigError>(t.superclasses.empty() || model.moe().type == "image",
                     "config 'train.superclasses' supervises Mobile V-MoE's per-image router: it needs "
                     "model.moe.type \"image\", not \"{}\"", model.moe().type);
  check<ConfigError>(t.router_loss_weight >= 0, "config 'train.router_loss_weight': must be >= 0");
  check<ConfigError>(t.log_every > 0 && t.eval_every > 0,
                     "config 'train.log_every'/'train.eval_every': must be > 0");
  check<ConfigError>(o.opt == "adamw" || o.opt == "sgd",
                     "config 'optim.opt': expected \"adamw\" or \"sgd\", got \"{}\"", o.opt);
  check<ConfigError>(o.lr > 0, "config 'optim.lr': must be > 0, got {}", o.lr);
  check<ConfigError>(o.weight_decay >= 0, "config 'optim.weight_decay': must be >= 0, got {}",
                     o.weight_decay);
  check<ConfigError>(o.layer_decay > 0 && o.layer_decay <= 1,
                     "config 'optim.layer_decay': must be in (0, 1], got {}", o.layer_decay);
  check<ConfigError>(o.moe_layer_decay == "top" || o.moe_layer_decay == "block",
                     "config 'optim.moe_layer_decay': expected top or block, got \"{}\"", o.moe_layer_decay);
  check<ConfigError>(o.weight_decay_groups == "jetpack" || o.weight_decay_groups == "timm",
                     "config 'optim.weight_decay_groups': expected jetpack or timm, got \"{}\"",
                     o.weight_decay_groups);
  check<ConfigError>(o.clip_grad >= 0, "config 'optim.clip_grad': must be >= 0, got {}", o.clip_grad);
  check<ConfigError>(o.sched_unit == "step" || o.sched_unit == "epoch",
                     "config 'optim.sched_unit': expected \"step\" or \"epoch\", got \"{}\"", o.sched_unit);
  check<ConfigError>(o.sched == "cosine" || o.sched == "constant",
                     "config 'optim.sched': expected \"cosine\" or \"constant\", got \"{}\"", o.sched);
  check<ConfigError>(o.warmup_epochs >= 0 && o.warmup_epochs <= t.epochs,
                     "config 'optim.warmup_epochs': must be in [0, epochs], got {}", o.warmup_epochs);
  check<ConfigError>(data.num_workers >= 0, "config 'data.num_workers': must be >= 0");
}

json to_json(const TrainConfig& c) {
  json a;
  data::to_json(a, c.augment);
  return {{"model", json(c.model)},
          {"data", data_to_json(c.data)},
          {"augment", a},
          {"optim", optim_to_json(c.optim)},
          {"train", loop_to_json(c.train)}};
}

TrainConfig train_config_from_json(const json& j) {
  check_known_keys(j, {"model", "data", "augment", "optim", "train"}, "");
  TrainConfig c;
  if (j.contains("model")) {
    c.model = models::model_config_from_json(j.at("model"), "model");
  }
  if (j.contains("data")) {
    c.data = data_from_json(j.at("data"));
  }
  if (j.contains("augment")) {
    data::from_json_checked(j.at("augment"), c.augment, "augment");
  }
  if (j.contains("optim")) {
    c.optim = optim_from_json(j.at("optim"));
  }
  if (j.contains("train")) {
    c.train = loop_from_json(j.at("train"));
  }
  c.validate();
  return c;
}

}  // namespace moejet::train
