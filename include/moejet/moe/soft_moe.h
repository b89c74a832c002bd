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
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

struct SoftMoeOptions {
  int64_t dim = 0;
  int64_t hidden = 0;
  int64_t num_experts = 8;
  int64_t slots_per_expert = 1;
  bool normalize = true;
  bool slot_layernorm = false;        ///< phi through LayerNorm(D), tokens as they are (see MoeConfig)
  bool l2_additive = true;            ///< x / (|x| + 1e-6) (authors'); else x / max(|x|, 1e-12)
  double noise_mult = 0.0;            ///< std of N(0, 1) noise on the logits
  bool noise_in_eval = false;         ///< noise and logits drop in eval too (the authors')
  double logits_drop = 0.0;           ///< -1e12 at Bernoulli(logits_drop) positions of the logits
  double expert_drop = 0.0;
  std::string expert_init = "kaiming_uniform";  ///< see ExpertMlp
  double drop_path = 0.0;             ///< the layer's whole output of an image (the authors' DropPath)
};

class SoftMoe : public MoeLayer {
 public:
  explicit SoftMoe(const SoftMoeOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;  ///< [B, N, D] -> [B, N, D]
  double macs(int64_t tokens) const override;
  std::string kind() const override {
    return "soft";
  }
  std::vector<std::pair<std::string, ExpertMlp>> expert_groups() const override {
    return {{"experts", experts}};
  }

  SoftMoeOptions options;
  torch::Tensor phi;    ///< [E, S, D]
  torch::Tensor scale;  ///< scalar, when normalize or slot_layernorm
  torch::nn::LayerNorm slot_norm{nullptr};  ///< when slot_layernorm
  ExpertMlp experts{nullptr};
};

/// Shared by Soft MoE and SpheroMoE: slots = dispatch x, then the expert groups, then combine.
/// dispatch [B, M, N] (a softmax over its last dim, the tokens), combine [B, N, M]; x [B, N, D];
/// `groups` split the M = sum(E_g * S) slots in order.
/// Returns y [B, N, D]; `drop_path` > 0 drops whole expert outputs per image in training.
torch::Tensor soft_route(const torch::Tensor& x, const torch::Tensor& dispatch,
                         const torch::Tensor& combine, const std::vector<ExpertMlp>& groups,
                         int64_t slots_per_expert, double drop_path, bool training);

/// Routing statistics from dispatch [B, E*S, N] and combine [B, N, E*S] weights.
RoutingStats soft_routing_stats(const torch::Tensor& dispatch, const torch::Tensor& combine,
                                int64_t num_experts);

}  // namespace moejet::moe
