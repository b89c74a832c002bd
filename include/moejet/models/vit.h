#pragma once
// Vision Transformer with timm's module tree, so that its state-dict keys are timm's:
// patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, ls1, norm2,
// mlp.fc1, mlp.fc2, ls2}, norm, fc_norm, head. Forward semantics follow timm's VisionTransformer
// (pre-norm blocks, LayerNorm eps 1e-6, exact GELU, pos_embed added to all tokens including the
// class token, token or average pooling). Any block's "mlp" can be swapped for another
// FeedForward (the MoE layers) without changing the rest of the model.

#include <functional>
#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "moejet/models/classifier.h"
#include "moejet/models/vit_config.h"
#include "moejet/nn/feed_forward.h"
#include "moejet/nn/layer_scale.h"

namespace moejet::models {

/// Non-overlapping patches as a strided convolution: [B, C, H, W] -> [B, N, D] in row-major order.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch_size);
  torch::Tensor forward(const torch::Tensor& images);
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t num_heads, bool qkv_bias, double attn_drop, double proj_drop);
  torch::Tensor forward(const torch::Tensor& x);  // [B, N, D] -> [B, N, D]
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};
  int64_t num_heads;
  /// Observer of the heads' outputs before proj ([B, N, D], head h in channels h*hd..(h+1)*hd):
  /// recycling from a wider checkpoint ranks whole heads by it.
  std::function<void(const torch::Tensor&)> on_context;
  double attn_drop, proj_drop;
};
TORCH_MODULE(Attention);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const VitConfig& config, double drop_path_rate);
  torch::Tensor forward(const torch::Tensor& x);
  /// Replaces the dense MLP (registered under the same name "mlp").
  void set_mlp(std::shared_ptr<nn::FeedForward> mlp);

  torch::nn::LayerNorm norm1{nullptr};
  Attention attn{nullptr};
  nn::LayerScale ls1{nullptr};  // null when init_values == 0
  torch::nn::LayerNorm norm2{nullptr};
  std::shared_ptr<nn::FeedForward> mlp;
  nn::LayerScale ls2{nullptr};
  double drop_path_rate;
};
TORCH_MODULE(Block);

class VisionTransformerImpl : public ConfiguredClassifier<VitConfig> {
 public:
  explicit VisionTransformerImpl(const VitConfig& config);

  /// [B, C, H, W] -> logits [B, num_classes] (or pooled features when num_classes == 0).
  torch::Tensor forward(const torch::Tensor& images) override;
  /// [B, C, H, W] -> tokens after the final norm [B, prefix + N, D].
  torch::Tensor forward_features(const torch::Tensor& images);
  /// Pools tokens and applies fc_norm/dropout/head; pre_logits skips the head.
  torch::Tensor forward_head(const torch::Tensor& tokens, bool pre_logits = false);
  /// Tokens after patch embedding, prefix tokens and position embedding [B, prefix + N, D].
  torch::Tensor embed(const torch::Tensor& images);

  /// Parameter names that timm exempts from weight decay (beyond 1-D parameters).
  std::vector<std::string> no_weight_decay() const override;
  /// Layer id for layer-wise lr decay (timm's group_matcher): 0 = embeddings, i + 1 = block i,
  /// depth + 1 = final norm / head.
  int64_t layer_id(const std::string& param_name) const override;
  int64_t num_layers() const override {
    return config.depth + 2;
  }
  /// Analytic multiply-accumulate count per image, by component.
  std::vector<std::pair<std::string, double>> macs_by_layer() const override;
  std::string arch() const override {
    return "vit";
  }
  int64_t num_blocks() const override {
    return config.depth;
  }
  std::string mlp_key(int64_t block) const override;
  std::string mlp_norm_key(int64_t block) const override;
  std::shared_ptr<nn::FeedForward> block_mlp(int64_t block) const override;
  int64_t block_dim(int64_t) const override {
    return config.embed_dim;
  }
  std::vector<std::pair<std::string, std::string>> summary_lines() const override;
  /// timm's checkpoint_filter_fn (see vit_checkpoint.h).
  io::StateDict adapt_checkpoint(const io::StateDict& state, std::vector<std::string>* notes) const override;

  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token;  // [1, 1, D] when class_token
  torch::Tensor pos_embed;  // [1, prefix + N, D]
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};  // null when fc_norm is used (timm's Identity)
  torch::nn::LayerNorm fc_norm{nullptr};
  torch::nn::Linear head{nullptr};  // null when num_classes == 0
  std::vector<Block> block_list;

 private:
  void init_weights();
};
TORCH_MODULE(VisionTransformer);

}  // namespace moejet::models
