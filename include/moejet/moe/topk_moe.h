#pragma once
// V-MoE token-choice routing (Riquelme et al. 2021), the per-token baseline of the Mobile V-MoE
// paper: a bias-free linear router scores every token against E experts, softmax turns the scores
// into gates, and each token is sent to its k highest-gate experts. Every image is its own group
// with a per-expert capacity C = ceil(k * N * capacity_factor / E), so an image's output never
// depends on the rest of the batch; all tokens' first choices are served before any second
// choice, and a choice whose expert buffer is full is dropped (the block's residual carries the
// token). Dispatch and combine are dense one-hot tensors [B, N, E, C] contracted with einsum, the
// E experts run as one batched ExpertMlp, and the layer reports the Switch/V-MoE load-balancing
// loss and routing statistics after each forward.

#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

#include "moejet/moe/expert_mlp.h"
#include "moejet/moe/layer_options.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

/// model.moe with "type": "topk".
struct TopKMoeOptions {
  static constexpr const char* kType = "topk";
  int64_t num_experts = 8;
  double mlp_ratio = 4.0;  ///< expert hidden = dim * mlp_ratio
  int64_t top_k = 2;
  /// Per-image capacity C = max(1, ceil(k * N * capacity_factor / E)), capped at N (so a factor
  /// of E / k or more drops nothing).
  double capacity_factor = 1.0;
  /// Std of Gaussian noise added to the router logits in training only (V-MoE uses 1 / E).
  double router_noise = 0.0;
  /// Weight of the load-balancing loss stored in last_aux_loss.
  double aux_loss_weight = 0.01;
  /// V-MoE's Batch Prioritized Routing: fill capacity in order of each token's top gate within
  /// its image instead of by position, so low-confidence tokens are the ones dropped.
  bool batch_priority = false;
  double expert_drop = 0.0;          ///< dropout inside the experts (after GELU and after fc2)
  std::string expert_init = "auto";  ///< see ExpertMlp; auto = trunc_normal (timm's Linear)
  MOEJET_CONFIG_FIELDS(num_experts, mlp_ratio, top_k, capacity_factor, router_noise, aux_loss_weight, batch_priority,
                       expert_drop, expert_init)

  void validate() const;
};

class TopKMoe : public MoeLayer {
 public:
  /// The layer for tokens of width `dim`.
  TopKMoe(const TopKMoeOptions& options, int64_t dim);

  /// x [B, N, D] -> [B, N, D]; sets last_aux_loss, last_stats (if collect_stats) and, when
  /// record_routing is set, last_gates / last_dispatch.
  torch::Tensor forward(const torch::Tensor& x) override;
  /// Router tokens * D * E plus k * tokens * 2 * D * H for the experts: an upper bound that
  /// assumes no token-choice is dropped (capacity drops only lower the real cost). The dispatch
  /// and combine einsums are data movement with one-hot weights and are not counted, as V-MoE's
  /// and the Mobile V-MoE paper's FLOP figures do not count them.
  double macs(int64_t tokens) const override;
  std::string kind() const override {
    return "topk";
  }
  std::vector<std::pair<std::string, ExpertMlp>> expert_groups() const override {
    return {{"experts", experts}};
  }
  /// Capacity per expert and image for N tokens.
  int64_t capacity(int64_t tokens) const;

  std::string describe() const override;

  TopKMoeOptions options;
  int64_t dim = 0, hidden = 0;
  torch::nn::Linear router{nullptr};
  ExpertMlp experts{nullptr};

  /// Debug/test aid: keep the last forward's gates [B, N, E] and dispatch mask [B, N, E, C]
  /// (detached). Off by default because the dense mask is the layer's largest tensor.
  bool record_routing = false;
  torch::Tensor last_gates;
  torch::Tensor last_dispatch;
};

}  // namespace moejet::moe
