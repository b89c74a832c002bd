#pragma once
// The experiment config of `moejet train`: one JSON file with sections "model", "data",
// "augment", "optim" and "train", each a small struct with in-class defaults. Parsing is strict
// (unknown keys are errors naming their dotted path); CLI flags override individual values after
// the file is read; the resolved config is written next to the run's checkpoints.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/json_util.h"
#include "moejet/data/augment.h"
#include "moejet/data/dataset.h"
#include "moejet/models/model_config.h"

namespace moejet::train {

struct DataConfig {
  std::string dataset = "fashion-mnist";  ///< spec for data::open_dataset
  std::string train_split = "train";
  std::string eval_split = "test";
  /// Keep only these classes (relabelled 0..K-1 in this order); empty = all.
  std::vector<int64_t> classes;
  /// Use at most this many training images (a seeded, class-stratified subset); 0 = all.
  int64_t train_limit = 0;
  int64_t eval_limit = 0;
  /// Only images [start, end) of the training split (before class filtering and the limit):
  /// disjoint parts of one data set for upstream pre-training and downstream fine-tuning.
  std::vector<int64_t> train_range;
  /// Hold out this fraction of the training split (after range and classes; seeded, stratified,
  /// the same images every time) as the eval split, for data sets with no held-out split of their
  /// own; 0 = use eval_split.
  double val_split = 0.0;
  int num_workers = 2;
  /// Image files whose header claims more pixels are refused before decoding (PIL's
  /// MAX_IMAGE_PIXELS); 0 = no limit.
  int64_t max_image_pixels = data::kDefaultMaxImagePixels;
};

struct OptimConfig {
  std::string opt = "adamw";          ///< "adamw" or "sgd"
  double lr = 1e-3;                   ///< peak learning rate (after warm-up)
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double momentum = 0.9;              ///< SGD only
  double layer_decay = 1.0;           ///< layer-wise lr decay (timm's --layer-decay); 1 = off
  /// Layer id of MoE parameters under layer decay: "top" (the MoE Jetpack authors'
  /// get_layer_depth: every MoE-layer parameter and the norm in front of it get the top id, the
  /// full lr) or "block" (their block's id, as any other parameter of the block).
  std::string moe_layer_decay = "top";
  /// Which parameters get weight decay: "jetpack" (the authors' MMPretrain rule: none on
  /// LayerNorm parameters, biases, pos_embed and SpheroMoE temperatures; slot_norm, cls_token and
  /// everything else decayed) or "timm" (none on 1-D parameters, biases and the model's
  /// no_weight_decay(): pos_embed, cls_token).
  std::string weight_decay_groups = "jetpack";
  double clip_grad = 0.0;             ///< max global grad norm; 0 = off
  std::string sched = "cosine";       ///< "cosine" or "constant"
  /// When the cosine's value changes: "step" (every optimizer step, timm's t_in_epochs=False) or
  /// "epoch" (once per epoch, from the epoch's first step: mmengine's by_epoch
  /// CosineAnnealingLR, the authors' recipe). The warm-up is per step either way.
  std::string sched_unit = "step";
  double warmup_epochs = 0.0;
  double warmup_lr = 1e-6;
  double min_lr = 1e-6;
};

struct TrainLoopConfig {
  int64_t epochs = 10;
  int64_t batch_size = 128;
  int64_t accum_steps = 1;            ///< gradient accumulation: optimizer step every N batches
  double label_smoothing = 0.1;
  uint64_t seed = 0;
  std::string device = "cpu";
  int threads = 0;                    ///< intra-op threads; 0 = libtorch's default
  std::string init;                   ///< checkpoint to initialise from (timm layout or moejet)
  bool init_drop_head = true;         ///< drop head.* of `init` if its class count differs
  std::string out_dir;                ///< run folder; empty: the CLI picks runs/<config>-<time>
  int64_t log_every = 50;             ///< optimizer steps between train-metric lines
  int64_t eval_every = 1;             ///< epochs between evaluations
  int64_t max_steps = 0;              ///< stop after this many optimizer steps (0 = all epochs)
  /// Mobile V-MoE router supervision (model.moe.type "image"): a super-class file (see
  /// data/superclasses.h), "random" (a balanced random division seeded by `seed`, the paper's
  /// baseline) or "" (end-to-end routing, no router loss).
  std::string superclasses;
  double router_loss_weight = 0.3;    ///< lambda in L = L_cls + lambda * CE(router, super-class)
};

struct TrainConfig {
  models::ModelConfig model;
  DataConfig data;
  data::AugmentConfig augment;
  OptimConfig optim;
  TrainLoopConfig train;

  /// Throws ConfigError for inconsistent values (naming the field).
  void validate() const;
};

json to_json(const TrainConfig& c);
TrainConfig train_config_from_json(const json& j);

}  // namespace moejet::train
