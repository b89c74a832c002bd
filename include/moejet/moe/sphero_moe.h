#pragma once
// SpheroMoE (MoE Jetpack, NeurIPS 2024): Soft-MoE slot routing on the hypersphere with an
// adaptive dual path. Tokens (keys) are L2-normalised along D; the slot queries phi [E, S, D]
// pass through a LayerNorm (the released configs' slot_layernorm) and are L2-normalised, so the
// logits are cosine similarities in [-1, 1]. Two learnable temperatures (dispatch and combine,
// init 0.5) sharpen them; a small Gaussian noise (noise_mult, default 1/E as in the released
// ViT-T config) is added to both in training. Dispatch = softmax over tokens; combine = entmax-1.5
// over all slots (the authors' code; sparse) or softmax (Soft MoE).
//
// Dual path: the first `core_experts` experts are large (hidden core_hidden), the remaining
// `universal_experts` small (hidden universal_hidden, a quarter by default). Both groups read
// their slots from the same dispatch and their outputs are concatenated along the slot axis
// before one combine step, so every token mixes both paths. The paper's V-JetMoE-T uses 98 core
// + 196 universal experts with one slot each in blocks 7-12.
//
// The defaults are the authors' code (Adlith/MoE-Jetpack soft_moe.py, DualPathSoftMoELayerWrapper;
// the parity test runs their fixtures), except where noted; docs/jetpack-differences.md lists
// every difference with the option that restores theirs:
// - noise only in training (`noise_in_eval` restores the authors' always-on noise);
// - temperatures are clamped below at `temperature_min` (1e-2) so a learnt temperature cannot
//   divide by ~0 (0: no clamp, as the authors);
// - drop path (authors): the layer's whole output of an image is dropped (`drop_path_per_image`);
//   otherwise one expert's outputs of one image (mask [B, E]).

#include <memory>

#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "moejet/moe/expert_mlp.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

struct SpheroMoeOptions {
  int64_t dim = 0;
  int64_t core_experts = 1;
  int64_t core_hidden = 0;
  int64_t universal_experts = 0;
  int64_t universal_hidden = 0;
  int64_t slots_per_expert = 1;
  bool slot_layernorm = true;
  bool offset_scale = false;          ///< learnable per-channel affine on keys and on phi
  double temperature_init = 0.5;
  double temperature_min = 1e-2;      ///< clamp below; 0 = none
  double noise_mult = -1.0;           ///< < 0: 1 / (core + universal experts)
  bool noise_in_eval = false;
  std::string combine = "entmax15";   ///< or "softmax"
  std::string phi_init = "orthogonal_experts";  ///< or "orthogonal_slots" (see moe_config.h)
  std::string expert_init = "kaiming_uniform";  ///< see ExpertMlp
  double expert_drop = 0.0;
  double expert_drop_path = 0.0;
  bool drop_path_per_image = true;    ///< whole output per image (authors); else per expert
  double eps = 1e-6;
  bool l2_additive = true;            ///< x / (|x| + eps) (authors'); else x / max(|x|, eps)
};

class SpheroMoe : public MoeLayer {
 public:
  explicit SpheroMoe(const SpheroMoeOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;  ///< [B, N, D] -> [B, N, D]
  double macs(int64_t tokens) const override;
  std::string kind() const override {
    return "sphero";
  }
  std::vector<std::pair<std::string, ExpertMlp>> expert_groups() const override {
    std::vector<std::pair<std::string, ExpertMlp>> g{{"core", core}};
    if (universal) {
      g.emplace_back("universal", universal);
    }
    return g;
  }
  int64_t num_experts() const {
    return options.core_experts + options.universal_experts;
  }
  /// Unit-norm keys [B, N, D] and queries [E*S, D] (exposed for tests and analysis).
  torch::Tensor keys(const torch::Tensor& x) const;
  torch::Tensor queries() const;

  SpheroMoeOptions options;
  torch::Tensor phi;                      ///< [E, S, D], orthogonal init
  torch::nn::LayerNorm slot_norm{nullptr};
  torch::Tensor dispatch_temperature, combine_temperature;  ///< scalars
  torch::Tensor key_scale, key_offset, phi_scale, phi_offset;  ///< [D], when offset_scale
  ExpertMlp core{nullptr};
  ExpertMlp universal{nullptr};           ///< null without universal experts
};

/// SpheroMoE's dispatch and combine logits from the cosines cos [B, N, M] and the (clamped)
/// temperatures: (cos / t_d + noise) transposed to [B, M, N], and cos / t_c + noise [B, N, M];
/// `noise` may be undefined. Fused forward and backward on the CPU for float; tensor ops otherwise.
std::pair<torch::Tensor, torch::Tensor> sphero_logits(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                      const torch::Tensor& t_c, const torch::Tensor& noise);

/// The same with the noise drawn here, N(0, noise_std^2) (0: none), one sample shared by both
/// logits. On the CPU in float it is drawn inside the fused pass from a counter-based stream
/// keyed by torch's default generator (core/counter_random.h); elsewhere with torch::randn_like.
std::pair<torch::Tensor, torch::Tensor> sphero_logits(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                      const torch::Tensor& t_c, double noise_std);

}  // namespace moejet::moe
