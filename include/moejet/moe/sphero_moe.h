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
#include "moejet/moe/layer_options.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

/// model.moe with "type": "sphero".
struct SpheroMoeOptions {
  static constexpr const char* kType = "sphero";
  int64_t core_experts = 0;
  int64_t universal_experts = 0;
  double core_mlp_ratio = 4.0;       ///< core expert hidden = dim * core_mlp_ratio
  double universal_mlp_ratio = 1.0;  ///< MoE Jetpack default: a quarter of the core hidden size
  int64_t slots_per_expert = 1;
  bool slot_layernorm = true;
  bool offset_scale = false;         ///< learnable per-channel affine on keys and on phi
  std::string combine = "entmax15";  ///< "entmax15" (authors' code) or "softmax" (Soft MoE)
  double temperature_init = 0.5;
  double temperature_min = 1e-2;  ///< temperatures clamped below this; 0 = no clamp (authors)
  /// std of the N(0, 1) noise on the routing logits; < 0: 1 / (number of experts), as the
  /// released config.
  double noise_mult = -1.0;
  bool noise_in_eval = false;  ///< the authors' code adds the noise in eval too
  /// Orthogonal slot queries phi [E, S, D]: "orthogonal_experts" (authors: torch's orthogonal_ on
  /// phi itself, i.e. rows = experts over S*D) or "orthogonal_slots" (rows = the E*S slots over D).
  std::string phi_init = "orthogonal_experts";
  /// "add": x / (|x| + 1e-6), the authors' l2norm; "clamp": x / max(|x|, 1e-6).
  std::string l2_norm = "add";
  std::string expert_init = "auto";  ///< see ExpertMlp; auto = kaiming_uniform (the authors')
  double expert_drop = 0.0;          ///< dropout inside the experts
  /// Drop path on the expert outputs, rate r = expert_drop_path: mode "image" (authors) drops the
  /// whole output of an image, at rate linspace(0, r, depth)[block]; "expert" one expert's outputs
  /// of one image, rising linearly 0 -> r over the MoE blocks.
  double expert_drop_path = 0.0;
  std::string expert_drop_path_mode = "image";
  MOEJET_CONFIG_FIELDS(core_experts, universal_experts, core_mlp_ratio, universal_mlp_ratio, slots_per_expert,
                       slot_layernorm, offset_scale, combine, temperature_init, temperature_min, noise_mult,
                       noise_in_eval, phi_init, l2_norm, expert_init, expert_drop, expert_drop_path,
                       expert_drop_path_mode)

  void validate() const;
};

class SpheroMoe : public MoeLayer {
 public:
  /// The layer for tokens of width `dim`, with drop-path rate `drop_path` (see moe_drop_path_rate).
  SpheroMoe(const SpheroMoeOptions& options, int64_t dim, double drop_path = 0.0);
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

  std::string describe() const override;

  SpheroMoeOptions options;
  int64_t dim = 0, core_hidden = 0, universal_hidden = 0;
  double drop_path = 0.0;
  torch::Tensor phi;  ///< [E, S, D], orthogonal init
  torch::nn::LayerNorm slot_norm{nullptr};
  torch::Tensor dispatch_temperature, combine_temperature;     ///< scalars
  torch::Tensor key_scale, key_offset, phi_scale, phi_offset;  ///< [D], when offset_scale
  ExpertMlp core{nullptr};
  ExpertMlp universal{nullptr};  ///< null without universal experts
};

/// SpheroMoE's dispatch and combine logits from the cosines cos [B, N, M] and the (clamped)
/// temperatures: (cos / t_d + noise) transposed to [B, M, N], and cos / t_c + noise [B, N, M];
/// `noise` may be undefined. Fused forward and backward on the CPU for float; tensor ops otherwise.
std::pair<torch::Tensor, torch::Tensor> sphero_logits(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                      const torch::Tensor& t_c, const torch::Tensor& noise);

/// The same with the noise drawn here, N(0, noise_std^2) (0: none), one sample shared by both
/// logits. On the CPU in float it is drawn inside the fused pass from a counter-based stream
/// keyed by torch's default generator (kernels/counter_random.h); elsewhere with torch::randn_like.
std::pair<torch::Tensor, torch::Tensor> sphero_logits(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                      const torch::Tensor& t_c, double noise_std);

}  // namespace moejet::moe
