#pragma once
// The face every backbone shows to training, evaluation, recycling and reporting: an image
// classifier module whose transformer-style blocks each hold a token MLP ("mlp", a FeedForward)
// that may be an MoE layer. ViT's tokens are patches, ConvNeXt's are spatial positions; the rest
// of moejet (trainer, optimizer grouping, checkpoint recycling, unit statistics, FLOP tables)
// only needs what is declared here, so a new backbone plugs in without touching them. Blocks are
// numbered flat in depth order (ViT: blocks.N; ConvNeXt: over all stages, timm's drop-path order).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "moejet/core/json_util.h"
#include "moejet/io/state_dict.h"
#include "moejet/moe/image_router.h"
#include "moejet/moe/moe_config.h"
#include "moejet/moe/moe_layer.h"
#include "moejet/nn/feed_forward.h"

namespace moejet::models {

class ImageClassifierImpl : public torch::nn::Module {
 public:
  /// [B, C, H, W] -> logits [B, num_classes] (pooled features when there is no head).
  virtual torch::Tensor forward(const torch::Tensor& images) = 0;
  /// Analytic multiply-accumulates per image at the configured size, by component.
  virtual std::vector<std::pair<std::string, double>> macs_by_layer() const = 0;
  virtual std::string arch() const = 0;
  virtual int64_t image_size() const = 0;
  virtual int64_t in_chans() const = 0;
  virtual int64_t num_classes() const = 0;

  /// Blocks in depth order, each with a token MLP slot.
  virtual int64_t num_blocks() const = 0;
  /// The state-dict prefix of block i's MLP slot without the trailing dot ("blocks.3.mlp",
  /// "stages.2.blocks.1.mlp").
  virtual std::string mlp_key(int64_t block) const = 0;
  /// The state-dict prefix of the norm in front of block i's MLP ("blocks.3.norm2",
  /// "stages.2.blocks.1.norm").
  virtual std::string mlp_norm_key(int64_t block) const = 0;
  /// Block i's MLP slot (a dense Mlp, or an MoE layer).
  virtual std::shared_ptr<nn::FeedForward> block_mlp(int64_t block) const = 0;
  /// Token width of block i.
  virtual int64_t block_dim(int64_t block) const = 0;
  /// Block i as `moejet info` names it ("6"; ConvNeXt: "6 (stages.2.blocks.0.mlp, width 160)").
  virtual std::string block_label(int64_t block) const {
    return std::to_string(block);
  }
  /// What `moejet info` prints of the architecture: (label, text) lines, e.g. ("model", "ViT d=192 ...").
  virtual std::vector<std::pair<std::string, std::string>> summary_lines() const = 0;

  /// Parameter names exempt from weight decay beyond 1-D parameters (timm's no_weight_decay).
  virtual std::vector<std::string> no_weight_decay() const {
    return {};
  }
  /// Layer id for layer-wise lr decay (timm's group_matcher): 0 = stem/embeddings, depth order
  /// after that, num_layers() - 1 = final norm and head.
  virtual int64_t layer_id(const std::string& param_name) const = 0;
  virtual int64_t num_layers() const = 0;

  /// Adapts a checkpoint to this model before loading (e.g. ViT's pos_embed resampling); one
  /// note per change made.
  virtual io::StateDict adapt_checkpoint(const io::StateDict& state, std::vector<std::string>* notes) const {
    (void)notes;
    return state;
  }

  /// (block index, layer) of every MoE block, in depth order.
  std::vector<std::pair<int64_t, std::shared_ptr<moe::MoeLayer>>> moe_layer_list;
  /// The sum of the MoE layers' auxiliary losses of the last forward (load balancing, ...), to add
  /// to the task loss; undefined for a dense model.
  torch::Tensor moe_aux_loss() const;
  /// Mobile V-MoE's per-image router ("router.*"; moe.type "image"), run on the tokens entering
  /// the first MoE block; its decision of the last forward is kept for losses and eval.
  moe::ImageRouter router{nullptr};
  moe::ImageRouting last_routing;

 protected:
  /// Builds the MoE layers `moe` asks for (each of its block's width), hands each to `set_mlp`
  /// for its block and records it in moe_layer_list. Called from a backbone's constructor once
  /// its blocks exist.
  void install_moe_layers(const moe::MoeConfig& moe,
                          const std::function<void(int64_t block, std::shared_ptr<nn::FeedForward> layer)>& set_mlp);
  /// Registers "router" for moe.type "image": it reads tokens of width `dim` with
  /// `prefix_tokens` leading tokens (pooled by the class token when `pool_class_token`).
  void add_image_router(const moe::MoeConfig& moe, int64_t dim, int64_t prefix_tokens, bool pool_class_token);
  /// Runs the router on `tokens` [B, N, D] and hands its decision to every per-image MoE layer.
  void route_images(const torch::Tensor& tokens);
};

/// A backbone built from its config: the sizes every backbone config has (img_size, in_chans,
/// num_classes) answer the accessors above, so each backbone writes only what differs.
template <class Config>
class ConfiguredClassifier : public ImageClassifierImpl {
 public:
  explicit ConfiguredClassifier(const Config& c) : config(c) {}
  int64_t image_size() const override {
    return config.img_size;
  }
  int64_t in_chans() const override {
    return config.in_chans;
  }
  int64_t num_classes() const override {
    return config.num_classes;
  }

  Config config;
};

using ModelPtr = std::shared_ptr<ImageClassifierImpl>;

/// Counts parameters (all, or only those requiring grad).
int64_t count_parameters(const torch::nn::Module& module, bool trainable_only = false);

/// Multiply-accumulates per image: the sum of macs_by_layer().
double total_macs(const ImageClassifierImpl& model);

}  // namespace moejet::models
