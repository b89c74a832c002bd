#pragma once
// Soft MoE (Puigcerver et al., "From Sparse to Soft Mixtures of Experts", ICLR 2024). Each of the
// E experts owns S slots with learnable queries phi [E, S, D]. Logits are token-slot dot products
// [B, N, E*S]; dispatch weights are a softmax over the tokens (each slot is a convex combination
// of the image's tokens), combine weights a softmax over the slots (each output token is a convex
// combination of the slot outputs). With `normalize`, tokens and phi are L2-normalised and phi
// scaled by a learnable scalar, as the paper recommends for large D. Fully differentiable, no
// token dropping, and each image's output depends only on its own tokens.

#include <memory>

#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "moejet/moe/expert_mlp.h"
#include "moejet/moe/layer_options.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

/// model.moe with "type": "soft".
struct SoftMoeOptions {
  static constexpr const char* kType = "soft";
  int64_t num_experts = 8;
  double mlp_ratio = 4.0;  ///< expert hidden = dim * mlp_ratio
  int64_t slots_per_expert = 1;
  bool normalize = true;  ///< Soft MoE's l2 normalisation of tokens and phi
  /// The authors' slot_layernorm variant: tokens as they are, phi through LayerNorm(D) (no l2
  /// normalisation), then times the learnable scale.
  bool soft_slot_layernorm = false;
  /// -1e12 added to the logits at Bernoulli(logits_drop) positions before both softmaxes (the
  /// authors' moe_logits_drop), in training (and in eval with noise_in_eval).
  double logits_drop = 0.0;
  /// "add": x / (|x| + 1e-6), the authors' l2norm; "clamp": x / max(|x|, 1e-12), torch's normalize.
  std::string l2_norm = "add";
  double noise_mult = -1.0;          ///< std of N(0, 1) noise on the logits; <= 0: none
  bool noise_in_eval = false;        ///< noise and logits drop in eval too (the authors')
  std::string expert_init = "auto";  ///< see ExpertMlp; auto = kaiming_uniform (the authors')
  double expert_drop = 0.0;          ///< dropout inside the experts
  /// Drop path on the layer's whole output of an image (the authors' DropPath), at rate
  /// linspace(0, expert_drop_path, depth)[block]; mode "expert" is SpheroMoE's only (here: none).
  double expert_drop_path = 0.0;
  std::string expert_drop_path_mode = "image";
  MOEJET_CONFIG_FIELDS(num_experts, mlp_ratio, slots_per_expert, normalize, soft_slot_layernorm, logits_drop, l2_norm,
                       noise_mult, noise_in_eval, expert_init, expert_drop, expert_drop_path, expert_drop_path_mode)

  void validate() const;
};

class SoftMoe : public MoeLayer {
 public:
  /// The layer for tokens of width `dim`, with drop-path rate `drop_path` (see moe_drop_path_rate).
  SoftMoe(const SoftMoeOptions& options, int64_t dim, double drop_path = 0.0);
  torch::Tensor forward(const torch::Tensor& x) override;  ///< [B, N, D] -> [B, N, D]
  double macs(int64_t tokens) const override;
  std::string kind() const override {
    return "soft";
  }
  std::vector<std::pair<std::string, ExpertMlp>> expert_groups() const override {
    return {{"experts", experts}};
  }

  std::string describe() const override;

  SoftMoeOptions options;
  int64_t dim = 0, hidden = 0;
  double drop_path = 0.0;
  torch::Tensor phi;                        ///< [E, S, D]
  torch::Tensor scale;                      ///< scalar, when normalize or slot_layernorm
  torch::nn::LayerNorm slot_norm{nullptr};  ///< when slot_layernorm
  ExpertMlp experts{nullptr};
};

/// Shared by Soft MoE and SpheroMoE: slots = dispatch x, then the expert groups, then combine.
/// dispatch [B, M, N] (a softmax over its last dim, the tokens), combine [B, N, M]; x [B, N, D];
/// `groups` split the M = sum(E_g * S) slots in order.
/// Returns y [B, N, D]; `drop_path` > 0 drops whole expert outputs per image in training.
torch::Tensor soft_route(const torch::Tensor& x, const torch::Tensor& dispatch, const torch::Tensor& combine,
                         const std::vector<ExpertMlp>& groups, int64_t slots_per_expert, double drop_path,
                         bool training);

/// Routing statistics from dispatch [B, E*S, N] and combine [B, N, E*S] weights.
RoutingStats soft_routing_stats(const torch::Tensor& dispatch, const torch::Tensor& combine, int64_t num_experts);

}  // namespace moejet::moe
