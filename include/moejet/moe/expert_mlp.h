#pragma once
// A group of E expert MLPs of equal hidden size evaluated together: fc1 weight [E, H, D], bias
// [E, H], fc2 weight [E, D, H], bias [E, D] — each expert is a timm Mlp (fc1 -> GELU -> fc2),
// and all of them run as two batched GEMMs over the expert dimension (baddbmm), never a loop of
// per-expert matmuls. Core and universal experts of SpheroMoE's dual path are two such groups.
// Per-image routing gives each expert a different number of whole images: forward_groups runs
// each chosen expert on exactly its rows (a few large GEMMs), where a batched GEMM would pad every
// expert to the busiest one's count.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <vector>

namespace moejet::moe {

class ExpertMlpImpl : public torch::nn::Module {
 public:
  /// `drop` is dropout after the activation and after fc2 (MoE Jetpack's expert dropout). `init`
  /// is "trunc_normal" (timm's Linear: std .02, zero bias) or "kaiming_uniform" (the MoE Jetpack
  /// authors' MultiExpertLinear: torch's kaiming_uniform_(a=sqrt(5)) on [E, out, in], whose fan-in
  /// is out * in, so U(-b, b) with b = 1/sqrt(out * in); zero bias).
  ExpertMlpImpl(int64_t num_experts, int64_t dim, int64_t hidden, double drop = 0.0,
                const std::string& init = "trunc_normal");
  /// x [E, T, D] (T tokens or slots per expert) -> [E, T, D].
  torch::Tensor forward(const torch::Tensor& x);
  /// Only the experts listed in `expert_ids` ([A] int64): x [A, T, D] -> [A, T, D]. Experts not
  /// listed are not touched (per-image routing runs just the chosen ones).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& expert_ids);
  /// Rows grouped by expert: x [R, D] holds rows[i] rows for expert experts[i], in that order
  /// (R = the sum of rows) -> [R, D]. One GEMM pair per listed expert, each over its own rows.
  torch::Tensor forward_groups(const torch::Tensor& x, const std::vector<int64_t>& experts,
                               const std::vector<int64_t>& rows);
  /// Multiply-accumulates for `tokens_per_expert` rows through every expert.
  double macs(double tokens_per_expert) const;

  int64_t num_experts, dim, hidden;
  double drop;
  // Registered as "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias" via two holder modules so
  // the keys read like a dense Mlp's with a leading expert dimension.
  torch::Tensor fc1_weight, fc1_bias, fc2_weight, fc2_bias;

 private:
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                    const torch::Tensor& b2);
};
TORCH_MODULE(ExpertMlp);

}  // namespace moejet::moe
