#pragma once
// The experiment config of `moejet train`: one JSON file with sections "model", "data",
// "augment", "optim" and "train", each a small struct with in-class defaults. Parsing is strict
// (unknown keys are errors naming their dotted path); CLI flags override individual values after
// the file is read; the resolved config is written next to the run's checkpoints.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/config_fields.h"
#include "moejet/core/json_util.h"
#include "moejet/data/augment.h"
#include "moejet/data/data_config.h"
#include "moejet/models/model_config.h"

namespace moejet::train {

struct OptimConfig {
  std::string opt = "adamw";  ///< "adamw" or "sgd"
  double lr = 1e-3;           ///< peak learning rate (after warm-up)
  double weight_decay = 0.05;
  std::vector<double> betas{0.9, 0.999};  ///< Adam's (beta1, beta2)
  double eps = 1e-8;
  double momentum = 0.9;     ///< SGD only
  double layer_decay = 1.0;  ///< layer-wise lr decay (timm's --layer-decay); 1 = off
  /// Layer id of MoE parameters under layer decay: "top" (the MoE Jetpack authors'
  /// get_layer_depth: every MoE-layer parameter and the norm in front of it get the top id, the
  /// full lr) or "block" (their block's id, as any other parameter of the block).
  std::string moe_layer_decay = "top";
  /// Which parameters get weight decay: "jetpack" (the authors' MMPretrain rule: none on
  /// LayerNorm parameters, biases, pos_embed and SpheroMoE temperatures; slot_norm, cls_token and
  /// everything else decayed) or "timm" (none on 1-D parameters, biases and the model's
  /// no_weight_decay(): pos_embed, cls_token).
  std::string weight_decay_groups = "jetpack";
  double clip_grad = 0.0;        ///< max global grad norm; 0 = off
  std::string sched = "cosine";  ///< "cosine" or "constant"
  /// When the cosine's value changes: "step" (every optimizer step, timm's t_in_epochs=False) or
  /// "epoch" (once per epoch, from the epoch's first step: mmengine's by_epoch
  /// CosineAnnealingLR, the authors' recipe). The warm-up is per step either way.
  std::string sched_unit = "step";
  double warmup_epochs = 0.0;
  double warmup_lr = 1e-6;
  double min_lr = 1e-6;
  MOEJET_CONFIG_FIELDS(opt, lr, weight_decay, betas, eps, momentum, layer_decay, moe_layer_decay, weight_decay_groups,
                       clip_grad, sched, sched_unit, warmup_epochs, warmup_lr, min_lr)
};

struct TrainLoopConfig {
  int64_t epochs = 10;
  int64_t batch_size = 128;
  int64_t accum_steps = 1;  ///< gradient accumulation: optimizer step every N batches
  double label_smoothing = 0.1;
  uint64_t seed = 0;
  std::string device = "cpu";
  int threads = 0;  ///< intra-op threads; 0 = as the process has them (moejet: one per CPU)
  /// Precision of the matrix products, "fp32", "bf16" (mixed precision: fp32 master weights,
  /// optimizer, norms, softmax and checkpoints; kernels/precision.h) or "auto" (bf16 where the
  /// device has native bf16, else fp32).
  std::string precision = "fp32";
  std::string init;  ///< checkpoint to initialise from (timm layout or moejet)
  /// Drop head.* of `init` if its class count differs, or if it was trained for other classes.
  bool init_drop_head = true;
  std::string out_dir;     ///< run folder; empty: the CLI picks runs/<config>-<time>
  int64_t log_every = 50;  ///< optimizer steps between train-metric lines
  int64_t eval_every = 1;  ///< epochs between evaluations
  /// Images per evaluation batch; 0 = batch_size (timm's --validation-batch-size default). On
  /// one CPU thread the main job's ViTs evaluated 8-20% faster at 128 than at 256.
  int64_t eval_batch_size = 0;
  /// Epochs between resumable checkpoints (last.safetensors + its optimizer state; mmengine's
  /// CheckpointHook interval). The last epoch and a stopped run (Ctrl-C, SIGTERM,
  /// --stop-after-epochs) always write one; 0 = only then. best.safetensors is written whenever
  /// the evaluation improves, whatever this says.
  int64_t checkpoint_every = 1;
  /// Also evaluate before the first step (logged as epoch -1, step 0): where recycled or
  /// pre-trained weights start, the convergence figure's first point.
  bool eval_at_start = false;
  int64_t max_steps = 0;  ///< stop after this many optimizer steps (0 = all epochs)
  /// Mobile V-MoE router supervision (model.moe.type "image"): a super-class file (see
  /// data/superclasses.h), "random" (a balanced random division seeded by `seed`, the paper's
  /// baseline) or "" (end-to-end routing, no router loss).
  std::string superclasses;
  double router_loss_weight = 0.3;  ///< lambda in L = L_cls + lambda * CE(router, super-class)
  MOEJET_CONFIG_FIELDS(epochs, batch_size, accum_steps, label_smoothing, seed, device, threads, precision, init,
                       init_drop_head, out_dir, log_every, eval_every, eval_batch_size, checkpoint_every, eval_at_start,
                       max_steps, superclasses, router_loss_weight)
};

struct TrainConfig {
  models::ModelConfig model;
  data::DataConfig data;
  data::AugmentConfig augment;
  OptimConfig optim;
  TrainLoopConfig train;
  MOEJET_CONFIG_FIELDS(model, data, augment, optim, train)

  /// Throws ConfigError for inconsistent values (naming the field).
  void validate() const;
};

json to_json(const TrainConfig& c);
TrainConfig train_config_from_json(const json& j);

}  // namespace moejet::train
