#include "moejet/moe/per_image_moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "moejet/kernels/tracing.h"

namespace moejet::moe {

void PerImageMoeOptions::validate() const {
  check_router(num_experts, top_k, router_noise, aux_loss_weight);
  check_size(mlp_ratio, 64, "mlp_ratio");
  check_experts(expert_init, expert_drop);
}

PerImageMoe::PerImageMoe(const PerImageMoeOptions& o, int64_t dim)
    : options(o), dim(dim), hidden(expert_hidden(dim, o.mlp_ratio)) {
  o.validate();
  TORCH_CHECK(dim > 0, "PerImageMoe: dim must be > 0, got ", dim);
  experts = register_module("experts", ExpertMlp(o.num_experts, dim, hidden, o.expert_drop,
                                                 resolve_expert_init(o.expert_init, "trunc_normal")));
}

std::string PerImageMoe::describe() const {
  return fmt::format("{} experts (hidden {}), top-{} per image", options.num_experts, hidden, options.top_k);
}

void PerImageMoe::set_routing(const ImageRouting& routing, bool report_aux_loss) {
  routing_ = routing;
  report_aux_loss_ = report_aux_loss;
}

torch::Tensor PerImageMoe::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == dim, "PerImageMoe: expected [B, N, ", dim, "], got ", x.sizes());
  TORCH_CHECK(routing_.experts.defined() && routing_.experts.size(0) == x.size(0),
              "PerImageMoe: no routing for this batch (the model's router sets it before the MoE blocks)");
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), k = routing_.experts.size(1);
  const int64_t P = B * k;  // (image, choice) pairs, image-major
  if (kernels::tracing()) {
    // The grouping below is decided on the host from the routing's values, which a trace would
    // freeze: every (image, choice) pair runs its own expert's weights instead (the same result).
    auto in = x.unsqueeze(1).expand({B, k, N, D}).reshape({P, N, D});
    auto out = experts->forward(in, routing_.experts.reshape({P})).view({B, k, N, D});
    last_aux_loss = torch::zeros({}, x.options());
    return (out * routing_.weights.view({B, k, 1, 1}).to(x.scalar_type())).sum(1);
  }
  // The (image, choice) pairs sorted by expert (stable): each expert then runs on exactly its
  // images. Padding every expert to the busiest one's count, as a batched GEMM needs, cost 29%
  // more expert compute at the main job's loads (0.23 / 0.37 / 0.41).
  std::vector<int64_t> experts_run, rows;
  torch::Tensor gather, position;
  {
    torch::NoGradGuard ng;
    auto choice = routing_.experts.reshape({P}).to(torch::kCPU).contiguous();
    const int64_t* c = choice.data_ptr<int64_t>();
    std::vector<int64_t> count(options.num_experts, 0);
    for (int64_t p = 0; p < P; ++p) {
      TORCH_CHECK(c[p] >= 0 && c[p] < options.num_experts, "PerImageMoe: expert id ", c[p], " out of range");
      count[c[p]]++;
    }
    std::vector<int64_t> next(options.num_experts, 0);
    for (int64_t e = 0, offset = 0; e < options.num_experts; ++e) {
      next[e] = offset;
      offset += count[e];
      if (count[e] > 0) {
        experts_run.push_back(e);
        rows.push_back(count[e] * N);
      }
    }
    std::vector<int64_t> source(P), where(P);  // sorted position -> image; pair -> sorted position
    for (int64_t p = 0; p < P; ++p) {
      where[p] = next[c[p]]++;
      source[where[p]] = p / k;
    }
    gather = torch::tensor(source, torch::kLong).to(x.device());
    position = torch::tensor(where, torch::kLong).to(x.device());
  }
  auto in = x.index_select(0, gather).reshape({P * N, D});
  auto out = experts->forward_groups(in, experts_run, rows).view({P, N, D});
  auto per_pair = out.index_select(0, position).view({B, k, N, D});
  auto y = (per_pair * routing_.weights.view({B, k, 1, 1}).to(x.scalar_type())).sum(1);

  last_aux_loss = report_aux_loss_ ? routing_.aux_loss : torch::zeros({}, x.options());
  if (collect_stats) {
    torch::NoGradGuard ng;
    auto load = torch::bincount(routing_.experts.reshape({P}).cpu(), {}, options.num_experts).to(torch::kDouble);
    last_stats.expert_load = load / static_cast<double>(P);
    auto g = torch::softmax(routing_.logits.detach(), -1);
    last_stats.dispatch_entropy = -torch::xlogy(g, g).sum(-1).mean().to(torch::kDouble).item<double>();
    last_stats.dropped_fraction = 0.0;
  }
  return y;
}

double PerImageMoe::macs(int64_t tokens) const {
  return static_cast<double>(options.top_k) * experts->macs(static_cast<double>(tokens)) /
         static_cast<double>(options.num_experts);
}

}  // namespace moejet::moe
