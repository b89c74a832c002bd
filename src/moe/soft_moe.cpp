#include "moejet/moe/soft_moe.h"

#include <cmath>

#include <torch/torch.h>

#include "moejet/kernels/expert_bmm.h"
#include "moejet/kernels/matmul.h"
#include "moejet/kernels/row_ops.h"
#include "moejet/nn/dropout.h"

namespace moejet::moe {

torch::Tensor soft_route(const torch::Tensor& x, const torch::Tensor& dispatch, const torch::Tensor& combine,
                         const std::vector<ExpertMlp>& groups, int64_t S, double drop_path, bool training) {
  const int64_t B = x.size(0), D = x.size(2);
  // Slots are dispatch-weighted sums of the raw tokens: [B, M, N] x [B, N, D] -> [B, M, D].
  auto slots = kernels::batched_matmul(dispatch, x);
  std::vector<int64_t> sizes;
  int64_t total_experts = 0;
  for (const auto& g : groups) {
    sizes.push_back(g->num_experts * S);
    total_experts += g->num_experts;
  }
  TORCH_INTERNAL_ASSERT(total_experts * S == dispatch.size(1), "soft_route: groups cover ", total_experts * S, " of ",
                        dispatch.size(1), " slots");
  // split, not narrow: its backward concatenates, where each narrow's would zero-fill and add a
  // full-size gradient.
  auto group_slots = slots.split_with_sizes(sizes, 1);
  std::vector<torch::Tensor> outs;
  for (size_t i = 0; i < groups.size(); ++i) {
    auto g = groups[i];  // holders are shared pointers; forward is non-const
    const int64_t E = g->num_experts, M = E * S;
    // [B, E, S, D] -> [E, B*S, D]: one batched GEMM per layer of the group's MLP.
    auto s = group_slots[i].reshape({B, E, S, D}).permute({1, 0, 2, 3}).reshape({E, B * S, D});
    auto o = g->forward(s);
    outs.push_back(o.view({E, B, S, D}).permute({1, 0, 2, 3}).reshape({B, M, D}));
  }
  auto out = outs.size() == 1 ? outs[0] : torch::cat(outs, 1);
  if (training && drop_path > 0) {
    // Viewed as [B*E, S, D], drop_path's per-row mask drops one expert's outputs for one image.
    out = nn::drop_path(out.view({B * total_experts, S, D}), drop_path, training).view({B, total_experts * S, D});
  }
  return kernels::batched_matmul(combine, out);
}

RoutingStats soft_routing_stats(const torch::Tensor& dispatch, const torch::Tensor& combine, int64_t num_experts) {
  torch::NoGradGuard ng;
  RoutingStats st;
  auto mass = combine.detach().sum(std::vector<int64_t>{0, 1}).view({num_experts, -1}).sum(1);
  st.expert_load = (mass / mass.sum().clamp_min(1e-12)).to(torch::kCPU, torch::kFloat);
  auto d = dispatch.detach();
  st.dispatch_entropy = (-(d * d.clamp_min(1e-12).log()).sum(-1)).mean().item<double>();
  return st;
}

void SoftMoeOptions::validate() const {
  check_size(static_cast<double>(num_experts), 65536, "num_experts");
  check_size(static_cast<double>(slots_per_expert), 65536, "slots_per_expert");
  check_size(mlp_ratio, 64, "mlp_ratio");
  check_rate(logits_drop, "logits_drop");
  check_rate(expert_drop_path, "expert_drop_path");
  check_choice(l2_norm, {"add", "clamp"}, "l2_norm");
  check_experts(expert_init, expert_drop);
  check_choice(expert_drop_path_mode, {"image", "expert"}, "expert_drop_path_mode");
  check<ConfigError>(expert_drop_path_mode == "image" || expert_drop_path == 0,
                     "model.moe.expert_drop_path_mode: \"expert\" is SpheroMoE's; Soft MoE drops the whole output "
                     "of an image (\"image\")");
}

SoftMoe::SoftMoe(const SoftMoeOptions& o, int64_t dim, double drop_path)
    : options(o), dim(dim), hidden(expert_hidden(dim, o.mlp_ratio)), drop_path(drop_path) {
  o.validate();
  TORCH_CHECK(dim > 0, "SoftMoe: dim must be > 0, got ", dim);
  phi = register_parameter(
      "phi", torch::randn({o.num_experts, o.slots_per_expert, dim}) * (1.0 / std::sqrt(static_cast<double>(dim))));
  if (o.normalize || o.soft_slot_layernorm) {
    scale = register_parameter("scale", torch::ones({}));
  }
  if (o.soft_slot_layernorm) {
    slot_norm = register_module("slot_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  }
  experts = register_module("experts", ExpertMlp(o.num_experts, dim, hidden, o.expert_drop,
                                                 resolve_expert_init(o.expert_init, "kaiming_uniform")));
}

std::string SoftMoe::describe() const {
  return fmt::format("{} experts (hidden {}), {} slot(s) each", options.num_experts, hidden, options.slots_per_expert);
}

torch::Tensor SoftMoe::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == dim, "SoftMoe: expected [B, N, ", dim, "], got ", x.sizes());
  auto q = phi.reshape({-1, dim});  // [M, D]
  auto k = x;
  if (options.soft_slot_layernorm) {
    q = slot_norm->forward(q) * scale;
  } else if (options.normalize) {
    // The authors' l2norm adds 1e-6 to the norm; torch's normalize clamps it at 1e-12.
    const bool additive = options.l2_norm == "add";
    const double eps = additive ? 1e-6 : 1e-12;
    k = kernels::l2_normalize(x, eps, additive);
    q = kernels::l2_normalize(q, eps, additive) * scale;
  }
  auto logits = kernels::matmul(k, q.t());  // [B, N, M]
  if (is_training() || options.noise_in_eval) {
    if (options.noise_mult > 0) {
      logits = logits + torch::randn_like(logits) * options.noise_mult;
    }
    if (options.logits_drop > 0) {
      // The authors' logits dropout: a dropped (token, slot) pair is out of both softmaxes.
      logits = logits + torch::bernoulli(torch::full_like(logits, options.logits_drop)) * -1e12;
    }
  }
  // Dispatch normalises over tokens: on a contiguous [B, M, N] copy that softmax (and its
  // backward) runs along the last dim, several times faster than a strided one on CPU.
  auto dispatch = kernels::row_softmax(logits.transpose(1, 2).contiguous());
  auto combine = kernels::row_softmax(logits);
  auto y = nn::drop_path(soft_route(x, dispatch, combine, {experts}, options.slots_per_expert, 0.0, is_training()),
                         drop_path, is_training());
  last_aux_loss = torch::zeros({}, x.options());
  if (collect_stats) {
    last_stats = soft_routing_stats(dispatch, combine, options.num_experts);
  }
  return y;
}

double SoftMoe::macs(int64_t tokens) const {
  const double N = static_cast<double>(tokens), D = static_cast<double>(dim);
  const double M = static_cast<double>(options.num_experts * options.slots_per_expert);
  // logits + slots + combine, then every slot through its expert.
  return 3.0 * N * M * D + experts->macs(static_cast<double>(options.slots_per_expert));
}

}  // namespace moejet::moe
