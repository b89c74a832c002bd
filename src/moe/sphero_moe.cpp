#include "moejet/moe/sphero_moe.h"

#include <torch/torch.h>

#include "moejet/moe/entmax.h"
#include "moejet/moe/soft_moe.h"

namespace moejet::moe {

namespace F = torch::nn::functional;

SpheroMoe::SpheroMoe(const SpheroMoeOptions& o) : options(o) {
  TORCH_CHECK(o.dim > 0 && o.core_experts > 0 && o.core_hidden > 0 && o.slots_per_expert > 0,
              "SpheroMoe: invalid options dim=", o.dim, " core_experts=", o.core_experts,
              " core_hidden=", o.core_hidden, " slots=", o.slots_per_expert);
  TORCH_CHECK(o.universal_experts == 0 || o.universal_hidden > 0,
              "SpheroMoe: universal experts need universal_hidden > 0");
  TORCH_CHECK(o.combine == "entmax15" || o.combine == "softmax",
              "SpheroMoe: combine must be entmax15 or softmax, got ", o.combine);
  const int64_t E = o.core_experts + o.universal_experts;
  auto p = torch::empty({E * o.slots_per_expert, o.dim});
  torch::nn::init::orthogonal_(p);
  phi = register_parameter("phi", p.view({E, o.slots_per_expert, o.dim}));
  if (o.slot_layernorm) {
    slot_norm = register_module("slot_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim})));
  }
  dispatch_temperature = register_parameter("dispatch_temperature", torch::full({}, o.temperature_init));
  combine_temperature = register_parameter("combine_temperature", torch::full({}, o.temperature_init));
  if (o.offset_scale) {
    key_scale = register_parameter("key_scale", torch::ones({o.dim}));
    key_offset = register_parameter("key_offset", torch::zeros({o.dim}));
    phi_scale = register_parameter("phi_scale", torch::ones({o.dim}));
    phi_offset = register_parameter("phi_offset", torch::zeros({o.dim}));
  }
  core = register_module("core", ExpertMlp(o.core_experts, o.dim, o.core_hidden, o.expert_drop));
  if (o.universal_experts > 0) {
    universal = register_module(
        "universal", ExpertMlp(o.universal_experts, o.dim, o.universal_hidden, o.expert_drop));
  }
}

torch::Tensor SpheroMoe::keys(const torch::Tensor& x) const {
  auto k = options.offset_scale ? x * key_scale + key_offset : x;
  return F::normalize(k, F::NormalizeFuncOptions().dim(-1).eps(options.eps));
}

torch::Tensor SpheroMoe::queries() const {
  auto q = phi.reshape({-1, options.dim});
  if (slot_norm) {
    // LayerNorm's forward is non-const; the functional form with its parameters is the same op.
    q = F::layer_norm(q, F::LayerNormFuncOptions({options.dim})
                             .weight(slot_norm->weight)
                             .bias(slot_norm->bias)
                             .eps(slot_norm->options.eps()));
  }
  if (options.offset_scale) {
    q = q * phi_scale + phi_offset;
  }
  return F::normalize(q, F::NormalizeFuncOptions().dim(-1).eps(options.eps));
}

torch::Tensor SpheroMoe::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options.dim, "SpheroMoe: expected [B, N, ",
              options.dim, "], got ", x.sizes());
  auto cos = torch::matmul(keys(x), queries().t());  // [B, N, M], cosine similarities
  auto dl = cos / dispatch_temperature.clamp_min(1e-2);
  auto cl = cos / combine_temperature.clamp_min(1e-2);
  const double noise = options.noise_mult >= 0 ? options.noise_mult : 1.0 / static_cast<double>(num_experts());
  if (noise > 0 && (is_training() || options.noise_in_eval)) {
    // One sample shared by dispatch and combine, as in the authors' code.
    auto n = torch::randn_like(cos) * noise;
    dl = dl + n;
    cl = cl + n;
  }
  // Dispatch over tokens on a contiguous [B, M, N] copy: a last-dim softmax (see SoftMoe).
  auto dispatch = torch::softmax(dl.transpose(1, 2).contiguous(), -1);
  auto combine = options.combine == "entmax15" ? entmax15(cl, 2) : torch::softmax(cl, 2);
  std::vector<ExpertMlp> groups{core};
  if (universal) {
    groups.push_back(universal);
  }
  auto y = soft_route(x, dispatch, combine, groups, options.slots_per_expert, options.expert_drop_path,
                      is_training());
  last_aux_loss = torch::zeros({}, x.options());
  if (collect_stats) {
    last_stats = soft_routing_stats(dispatch, combine, num_experts());
  }
  return y;
}

double SpheroMoe::macs(int64_t tokens) const {
  const double N = static_cast<double>(tokens), D = static_cast<double>(options.dim);
  const double M = static_cast<double>(num_experts() * options.slots_per_expert);
  const double S = static_cast<double>(options.slots_per_expert);
  double m = 3.0 * N * M * D + core->macs(S);
  if (universal) {
    m += universal->macs(S);
  }
  return m;
}

}  // namespace moejet::moe
