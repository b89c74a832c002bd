#include "moejet/moe/topk_moe.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "moejet/nn/init.h"
#include "moejet/nn/products.h"

namespace moejet::moe {

namespace F = torch::nn::functional;

void TopKMoeOptions::validate() const {
  check_router(num_experts, top_k, router_noise, aux_loss_weight);
  check_size(mlp_ratio, 64, "mlp_ratio");
  check<ConfigError>(std::isfinite(capacity_factor) && capacity_factor > 0,
                     "model.moe.capacity_factor: must be > 0, got {}", capacity_factor);
  check_experts(expert_init, expert_drop);
}

TopKMoe::TopKMoe(const TopKMoeOptions& o, int64_t dim) : options(o), dim(dim), hidden(expert_hidden(dim, o.mlp_ratio)) {
  o.validate();
  TORCH_CHECK(dim > 0, "TopKMoe: dim must be > 0, got ", dim);
  router = register_module("router", torch::nn::Linear(torch::nn::LinearOptions(dim, o.num_experts).bias(false)));
  // trunc-normal .02 like every other ViT Linear rather than zeros: a zero router gives exact
  // ties, which the deterministic tie-break would send wholesale to experts 0..k-1 at step 0.
  nn::trunc_normal_(router->weight, 0.02);
  experts = register_module("experts", ExpertMlp(o.num_experts, dim, hidden, o.expert_drop,
                                                 resolve_expert_init(o.expert_init, "trunc_normal")));
  last_aux_loss = torch::zeros({});
}

std::string TopKMoe::describe() const {
  return fmt::format("{} experts (hidden {}), top-{}", options.num_experts, hidden, options.top_k);
}

int64_t TopKMoe::capacity(int64_t tokens) const {
  double c = std::ceil(static_cast<double>(options.top_k * tokens) * options.capacity_factor /
                       static_cast<double>(options.num_experts));
  // One expert can receive each token at most once, so slots beyond N would always stay empty.
  return std::clamp<int64_t>(static_cast<int64_t>(c), 1, std::max<int64_t>(tokens, 1));
}

torch::Tensor TopKMoe::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == dim, "TopKMoe: expected x [B, N, ", dim, "], got ", x.sizes());
  const int64_t b = x.size(0), n = x.size(1), d = x.size(2);
  const int64_t e = options.num_experts, k = options.top_k;
  TORCH_CHECK(n > 0, "TopKMoe: no tokens in x ", x.sizes());
  const int64_t c = capacity(n);

  auto logits = nn::linear(*router, x);  // [B, N, E]
  if (is_training() && options.router_noise > 0) {
    logits = logits + torch::randn_like(logits) * options.router_noise;
  }
  auto gates = torch::softmax(logits, -1);

  // A stable descending sort instead of topk: ties (e.g. a zero router) go to the lower expert
  // index, identically on every device, which makes routing reproducible and testable.
  torch::Tensor ranked, order;
  std::tie(ranked, order) = gates.detach().sort(/*stable=*/true, -1, /*descending=*/true);
  auto choice = order.narrow(-1, 0, k);  // [B, N, k]

  torch::Tensor dispatch, kept;  // [B, N, E, C], [B, N, E]
  {
    torch::NoGradGuard no_grad;
    // Rank-major layout [B, k, N, E]: flattening (k, N) puts every token's first choice ahead of
    // any second choice, so the cumsum below fills buffers in V-MoE's priority order.
    auto mask = F::one_hot(choice, e).permute({0, 2, 1, 3});
    torch::Tensor perm;
    if (options.batch_priority) {
      // BPR: within each image, tokens with the most confident top-1 gate claim slots first.
      perm = std::get<1>(ranked.select(-1, 0).sort(/*stable=*/true, -1, /*descending=*/true));
      mask = mask.gather(2, perm.view({b, 1, n, 1}).expand({b, k, n, e}));
    }
    auto flat = mask.reshape({b, k * n, e});
    auto pos = flat.cumsum(1) - 1;  // slot this choice would take in its expert's buffer
    auto keep = flat.gt(0).logical_and(pos.lt(c));
    pos = pos.mul(keep).view({b, k, n, e});
    auto keep_i = keep.to(torch::kLong).view({b, k, n, e});
    if (options.batch_priority) {
      auto inv = perm.argsort(/*dim=*/int64_t{-1}, /*descending=*/false).view({b, 1, n, 1}).expand({b, k, n, e});
      pos = pos.gather(2, inv);
      keep_i = keep_i.gather(2, inv);
    }
    // A token's k choices are distinct experts, so summing over ranks never mixes two choices.
    auto slot = pos.sum(1);  // [B, N, E]
    kept = keep_i.sum(1);
    dispatch =
        torch::zeros({b, n, e, c}, x.options()).scatter_(3, slot.unsqueeze(-1), kept.unsqueeze(-1).to(x.scalar_type()));
  }

  // Combine with the raw gate of each kept choice: V-MoE does not renormalise the top-k gates,
  // so a token's output scale tracks the router's confidence (and dropped choices add nothing).
  auto combine = dispatch * gates.unsqueeze(-1);
  auto expert_in = torch::einsum("bnec,bnd->ebcd", {dispatch, x}).reshape({e, b * c, d});
  auto expert_out = experts->forward(expert_in).view({e, b, c, d});
  auto out = torch::einsum("bnec,ebcd->bnd", {combine, expert_out});

  // Switch / V-MoE load balancing: E * sum_e f_e * P_e, f_e = share of tokens whose top-1 is e
  // (piecewise constant), P_e = mean gate of e (carries the gradient). It is 1 whenever the
  // gates are uniform or f and P are both uniform, and grows as routing concentrates.
  auto f = F::one_hot(choice.select(-1, 0), e).to(gates.scalar_type()).mean(torch::IntArrayRef{0, 1});
  auto p = gates.mean(torch::IntArrayRef{0, 1});
  last_aux_loss = options.aux_loss_weight * static_cast<double>(e) * (f * p).sum();

  if (collect_stats) {
    torch::NoGradGuard no_grad;
    auto load = kept.sum(torch::IntArrayRef{0, 1}).to(torch::kDouble).cpu();
    const double total = load.sum().item<double>();
    last_stats.expert_load = load / std::max(total, 1.0);
    last_stats.dispatch_entropy = -torch::xlogy(gates, gates).sum(-1).mean().to(torch::kDouble).item<double>();
    last_stats.dropped_fraction = 1.0 - total / static_cast<double>(b * n * k);
  }
  if (record_routing) {
    last_gates = gates.detach();
    last_dispatch = dispatch;
  }
  return out;
}

double TopKMoe::macs(int64_t tokens) const {
  const double t = static_cast<double>(tokens);
  const double d = static_cast<double>(dim);
  return t * d * static_cast<double>(options.num_experts) +
         static_cast<double>(options.top_k) * t * 2.0 * d * static_cast<double>(hidden);
}

}  // namespace moejet::moe
