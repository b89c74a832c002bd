#pragma once
// ConvNeXt (Liu et al. 2022), MoE Jetpack's second backbone, with timm's module tree and
// state-dict keys so that timm checkpoints load as they are:
//   stem.0 (4x4 stride-4 conv), stem.1 (LayerNorm2d);
//   stages.N.downsample.{0: LayerNorm2d, 1: 2x2 stride-2 conv} for N >= 1;
//   stages.N.blocks.M.{conv_dw (7x7 depthwise), norm, mlp.fc1, mlp.fc2, gamma};
//   head.norm, head.fc (timm's head_norm_first=False: pool -> norm -> fc).
// A block is x + drop_path(gamma * mlp(norm(dwconv(x)))) with norm and MLP in channels-last
// layout, exactly as timm's conv_mlp=False path; LayerNorms use eps 1e-6. Presets follow timm:
// atto, femto, pico, nano, tiny.
//
// MoE variant: "moe" (moe/moe_config.h) turns the MLPs of chosen blocks into MoE layers whose
// tokens are the block's H*W spatial positions, channels-last, so that Soft MoE / SpheroMoE slots
// mix positions of one image as they mix ViT patches. `moe.layers` are flat block indices over
// all stages in depth order (convnext_atto, depths 2-2-6-2: 4..9 are stage 2, 10..11 stage 3), and
// each layer's experts have the width of their stage. Per-image routing ("image") routes on the
// mean position entering the first MoE block.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "moejet/core/config_fields.h"
#include "moejet/core/json_util.h"
#include "moejet/models/classifier.h"
#include "moejet/moe/moe_config.h"
#include "moejet/nn/feed_forward.h"

namespace moejet::models {

struct ConvNextConfig {
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  int64_t img_size = 224;  ///< for FLOP counts only (the network takes any size divisible by 32)
  std::vector<int64_t> depths{3, 3, 9, 3};
  std::vector<int64_t> dims{96, 192, 384, 768};
  double mlp_ratio = 4.0;
  int64_t kernel_size = 7;
  double ls_init_value = 1e-6;  ///< gamma init; 0 = no layer scale (no gamma keys)
  double drop_path_rate = 0.0;
  double drop_rate = 0.0;  ///< dropout before head.fc
  double norm_eps = 1e-6;
  MOEJET_CONFIG_FIELDS(in_chans, num_classes, img_size, depths, dims, mlp_ratio, kernel_size, ls_init_value,
                       drop_path_rate, drop_rate, norm_eps)
  moe::MoeConfig moe;  ///< MoE blocks (flat indices, see above); off by default; "moe" when enabled
  int64_t total_blocks() const;
  /// (stage, block within the stage) of flat block index i.
  std::pair<int64_t, int64_t> locate(int64_t block) const;
  void validate() const;
};

void to_json(json& j, const ConvNextConfig& c);
/// Strict: unknown keys are errors naming the dotted path; "preset" starts from a timm variant.
ConvNextConfig convnext_config_from_json(const json& j, const std::string& path = "model");
/// convnext_atto, convnext_femto, convnext_pico, convnext_nano, convnext_tiny.
ConvNextConfig convnext_preset(const std::string& name);
std::vector<std::string> convnext_preset_names();

/// LayerNorm over the channels of an NCHW tensor (timm's LayerNorm2d).
class LayerNorm2dImpl : public torch::nn::Module {
 public:
  LayerNorm2dImpl(int64_t channels, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;
  double eps;
};
TORCH_MODULE(LayerNorm2d);

class ConvNextBlockImpl : public torch::nn::Module {
 public:
  ConvNextBlockImpl(int64_t dim, const ConvNextConfig& c, double drop_path_rate);
  torch::Tensor forward(const torch::Tensor& x);  ///< [B, C, H, W] -> same
  /// Replaces the dense MLP (registered under the same name "mlp").
  void set_mlp(std::shared_ptr<nn::FeedForward> mlp);
  torch::nn::Conv2d conv_dw{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  std::shared_ptr<nn::FeedForward> mlp;  ///< a dense nn::Mlp; MoE layers take its place
  torch::Tensor gamma;                   ///< [C], undefined without layer scale
  double drop_path_rate;
};
TORCH_MODULE(ConvNextBlock);

class ConvNextImpl : public ConfiguredClassifier<ConvNextConfig> {
 public:
  explicit ConvNextImpl(const ConvNextConfig& config);
  torch::Tensor forward(const torch::Tensor& images) override;  ///< logits [B, num_classes]
  torch::Tensor forward_features(const torch::Tensor& images);  ///< [B, C_last, H/32, W/32]
  torch::Tensor forward_head(const torch::Tensor& features, bool pre_logits = false);
  /// Analytic multiply-accumulates per image at config.img_size, by component (fvcore convention).
  std::vector<std::pair<std::string, double>> macs_by_layer() const override;
  std::string arch() const override {
    return "convnext";
  }
  int64_t num_blocks() const override {
    return config.total_blocks();
  }
  std::string mlp_key(int64_t block) const override;
  std::string mlp_norm_key(int64_t block) const override;
  std::shared_ptr<nn::FeedForward> block_mlp(int64_t block) const override;
  int64_t block_dim(int64_t block) const override;
  std::string block_label(int64_t block) const override;
  std::vector<std::pair<std::string, std::string>> summary_lines() const override;
  /// timm's group_matcher: stem 0, each block (and its stage's downsample) in depth order, head last.
  int64_t layer_id(const std::string& param_name) const override;
  int64_t num_layers() const override {
    return config.total_blocks() + 2;
  }
  /// timm's conv_mlp layout (convnext_atto/femto/pico/nano are registered with conv_mlp=True):
  /// dense block MLPs as 1x1 convolutions, fc1 [4C, C, 1, 1] and fc2 [C, 4C, 1, 1], become the
  /// Linear layout [4C, C] / [C, 4C] (the same maths; the block norm is the same LayerNorm over
  /// channels in either layout).
  io::StateDict adapt_checkpoint(const io::StateDict& state, std::vector<std::string>* notes) const override;

  torch::nn::Sequential stem{nullptr};
  torch::nn::ModuleList stages{nullptr};
  std::vector<std::vector<ConvNextBlock>> blocks;  ///< [stage][block]
  torch::nn::LayerNorm head_norm{nullptr};
  torch::nn::Linear head_fc{nullptr};
};
TORCH_MODULE(ConvNext);

}  // namespace moejet::models
