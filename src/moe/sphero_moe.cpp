#include "moejet/moe/sphero_moe.h"

#include <torch/torch.h>

#include "moejet/kernels/counter_random.h"
#include "moejet/kernels/entmax.h"
#include "moejet/kernels/matmul.h"
#include "moejet/kernels/parallel.h"
#include "moejet/kernels/row_ops.h"
#include "moejet/kernels/tracing.h"
#include "moejet/moe/soft_moe.h"
#include "moejet/nn/dropout.h"

namespace moejet::moe {

namespace F = torch::nn::functional;

// The authors' l2norm eps; the "clamp" form uses it as torch's normalize eps.
constexpr double kL2Eps = 1e-6;

namespace {

// The dispatch and combine logits from the cosines in one pass each way: dispatch logits
// cos / t_d + noise laid out [B, M, N] (slots' rows over tokens, so that the softmax over tokens
// runs along the last dim) and combine logits cos / t_c + noise [B, N, M]. As separate tensor ops
// (two divisions, two noise adds, a transposing copy, and their backwards with the temperature
// reductions and the sum of the two cosine gradients) this was ~15 full passes over [B, N, M].
struct TemperedLogits : torch::autograd::Function<TemperedLogits> {
  // `noise` (empty: none) is added as given; otherwise, with noise_std > 0, N(0, noise_std^2)
  // noise is drawn row by row inside the pass from the counter-based stream `key`, so it is
  // never a [B, N, M] tensor of its own (drawing it with torch::randn was 10% of the layer's
  // forward). The noise has no gradient, so the backward does not need it.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& cos,
                                                const torch::Tensor& t_d, const torch::Tensor& t_c,
                                                const torch::Tensor& noise, double noise_std, int64_t key) {
    auto c = cos.contiguous();
    const int64_t B = c.size(0), N = c.size(1), M = c.size(2);
    auto dl = torch::empty({B, M, N}, c.options());
    auto cl = torch::empty({B, N, M}, c.options());
    const float inv_d = 1.0f / t_d.item<float>(), inv_c = 1.0f / t_c.item<float>();
    auto nz = noise.contiguous();
    const float* cp = c.data_ptr<float>();
    const float* np = nz.numel() > 0 ? nz.data_ptr<float>() : nullptr;
    const bool draw = np == nullptr && noise_std > 0;
    float* dp = dl.data_ptr<float>();
    float* lp = cl.data_ptr<float>();
    kernels::parallel_chunks(B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> drawn(draw ? static_cast<size_t>(M) : 0);
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t n = 0; n < N; ++n) {
          const int64_t row = (b * N + n) * M;
          const float* e = np ? np + row : nullptr;
          if (draw) {
            kernels::counter_normal(drawn.data(), M, static_cast<uint64_t>(row), static_cast<uint64_t>(key),
                                    static_cast<float>(noise_std));
            e = drawn.data();
          }
          for (int64_t m = 0; m < M; ++m) {
            const float em = e ? e[m] : 0.0f;
            lp[row + m] = cp[row + m] * inv_c + em;
            dp[(b * M + m) * N + n] = cp[row + m] * inv_d + em;
          }
        }
      }
    });
    ctx->save_for_backward({c, t_d, t_c});
    return {dl, cl};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& c = saved[0];
    const int64_t B = c.size(0), N = c.size(1), M = c.size(2);
    const float inv_d = 1.0f / saved[1].item<float>(), inv_c = 1.0f / saved[2].item<float>();
    auto gd = grads[0].defined() ? grads[0].contiguous() : torch::zeros({B, M, N}, c.options());
    auto gc = grads[1].defined() ? grads[1].contiguous() : torch::zeros({B, N, M}, c.options());
    auto gcos = torch::empty_like(c);
    const float* cp = c.data_ptr<float>();
    const float* gdp = gd.data_ptr<float>();
    const float* gcp = gc.data_ptr<float>();
    float* gp = gcos.data_ptr<float>();
    std::vector<double> sum_d(static_cast<size_t>(B)), sum_c(static_cast<size_t>(B));
    kernels::parallel_chunks(B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        double sd = 0, sc = 0;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t row = (b * N + n) * M;
          for (int64_t m = 0; m < M; ++m) {
            const float g_d = gdp[(b * M + m) * N + n], g_c = gcp[row + m];
            gp[row + m] = g_d * inv_d + g_c * inv_c;
            sd += static_cast<double>(g_d) * cp[row + m];
            sc += static_cast<double>(g_c) * cp[row + m];
          }
        }
        sum_d[static_cast<size_t>(b)] = sd;
        sum_c[static_cast<size_t>(b)] = sc;
      }
    });
    double sd = 0, sc = 0;
    for (int64_t b = 0; b < B; ++b) {
      sd += sum_d[static_cast<size_t>(b)];
      sc += sum_c[static_cast<size_t>(b)];
    }
    // d(cos / t)/dt = -cos / t^2
    auto g_td = torch::full({}, -sd * inv_d * inv_d, saved[1].options());
    auto g_tc = torch::full({}, -sc * inv_c * inv_c, saved[2].options());
    return {gcos, g_td, g_tc, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// Same function in tensor ops, for devices and dtypes the kernel above does not cover.
std::pair<torch::Tensor, torch::Tensor> tempered_logits_generic(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                                const torch::Tensor& t_c, const torch::Tensor& noise) {
  auto dl = cos / t_d, cl = cos / t_c;
  if (noise.defined()) {
    dl = dl + noise;
    cl = cl + noise;
  }
  return {dl.transpose(1, 2).contiguous(), cl};
}

void check_logit_shapes(const torch::Tensor& cos, const torch::Tensor& t_d, const torch::Tensor& t_c,
                        const torch::Tensor& noise) {
  TORCH_CHECK(
      cos.dim() == 3 && t_d.numel() == 1 && t_c.numel() == 1 && (!noise.defined() || noise.sizes() == cos.sizes()),
      "sphero_logits: expected cos [B, N, M], scalar temperatures and noise like cos, got ", cos.sizes(), ", ",
      t_d.sizes(), ", ", t_c.sizes(), " and ", noise.defined() ? noise.sizes() : c10::IntArrayRef{});
}

bool fused_logits(const torch::Tensor& cos, const torch::Tensor& t_d, const torch::Tensor& t_c,
                  const torch::Tensor& noise) {
  return !kernels::tracing() && cos.is_cpu() && cos.scalar_type() == torch::kFloat &&
         t_d.scalar_type() == torch::kFloat && t_c.scalar_type() == torch::kFloat &&
         (!noise.defined() || noise.scalar_type() == torch::kFloat);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> sphero_logits(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                      const torch::Tensor& t_c, const torch::Tensor& noise) {
  check_logit_shapes(cos, t_d, t_c, noise);
  if (fused_logits(cos, t_d, t_c, noise)) {
    // A custom Function's inputs must be defined tensors: no noise is an empty one.
    auto out = TemperedLogits::apply(cos, t_d, t_c, noise.defined() ? noise : torch::empty({0}, cos.options()), 0.0,
                                     int64_t{0});
    return {out[0], out[1]};
  }
  return tempered_logits_generic(cos, t_d, t_c, noise);
}

std::pair<torch::Tensor, torch::Tensor> sphero_logits(const torch::Tensor& cos, const torch::Tensor& t_d,
                                                      const torch::Tensor& t_c, double noise_std) {
  TORCH_CHECK(noise_std >= 0, "sphero_logits: noise_std must be >= 0, got ", noise_std);
  check_logit_shapes(cos, t_d, t_c, torch::Tensor());
  if (noise_std > 0 && fused_logits(cos, t_d, t_c, torch::Tensor())) {
    auto out = TemperedLogits::apply(cos, t_d, t_c, torch::empty({0}, cos.options()), noise_std,
                                     static_cast<int64_t>(kernels::draw_counter_key()));
    return {out[0], out[1]};
  }
  return sphero_logits(cos, t_d, t_c, noise_std > 0 ? torch::randn_like(cos).mul_(noise_std) : torch::Tensor());
}

void SpheroMoeOptions::validate() const {
  check<ConfigError>(core_experts > 0, "model.moe.core_experts: SpheroMoE needs at least one core expert");
  check<ConfigError>(universal_experts >= 0, "model.moe.universal_experts: must be >= 0");
  check_size(static_cast<double>(core_experts), 65536, "core_experts");
  check<ConfigError>(universal_experts <= 65536, "model.moe.universal_experts: must be <= 65536");
  check_size(static_cast<double>(slots_per_expert), 65536, "slots_per_expert");
  check_size(core_mlp_ratio, 64, "core_mlp_ratio");
  check_size(universal_mlp_ratio, 64, "universal_mlp_ratio");
  check_choice(combine, {"entmax15", "softmax"}, "combine");
  check<ConfigError>(temperature_init > 0, "model.moe.temperature_init: must be > 0");
  check<ConfigError>(temperature_min >= 0 && temperature_min < temperature_init,
                     "model.moe.temperature_min: must be in [0, temperature_init), got {}", temperature_min);
  check_choice(phi_init, {"orthogonal_experts", "orthogonal_slots"}, "phi_init");
  check_choice(l2_norm, {"add", "clamp"}, "l2_norm");
  check_experts(expert_init, expert_drop);
  check_rate(expert_drop_path, "expert_drop_path");
  check_choice(expert_drop_path_mode, {"image", "expert"}, "expert_drop_path_mode");
}

SpheroMoe::SpheroMoe(const SpheroMoeOptions& o, int64_t dim, double drop_path)
    : options(o),
      dim(dim),
      core_hidden(expert_hidden(dim, o.core_mlp_ratio)),
      universal_hidden(expert_hidden(dim, o.universal_mlp_ratio)),
      drop_path(drop_path) {
  o.validate();
  TORCH_CHECK(dim > 0, "SpheroMoe: dim must be > 0, got ", dim);
  const int64_t E = o.core_experts + o.universal_experts;
  // torch's orthogonal_ on [E, S, D] (the authors') makes the E rows of the [E, S*D] view
  // orthonormal; the slots' variant makes all E*S slot queries orthonormal over D.
  auto p = o.phi_init == "orthogonal_experts" ? torch::empty({E, o.slots_per_expert * dim})
                                              : torch::empty({E * o.slots_per_expert, dim});
  torch::nn::init::orthogonal_(p);
  phi = register_parameter("phi", p.view({E, o.slots_per_expert, dim}));
  if (o.slot_layernorm) {
    slot_norm = register_module("slot_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  }
  dispatch_temperature = register_parameter("dispatch_temperature", torch::full({}, o.temperature_init));
  combine_temperature = register_parameter("combine_temperature", torch::full({}, o.temperature_init));
  if (o.offset_scale) {
    key_scale = register_parameter("key_scale", torch::ones({dim}));
    key_offset = register_parameter("key_offset", torch::zeros({dim}));
    phi_scale = register_parameter("phi_scale", torch::ones({dim}));
    phi_offset = register_parameter("phi_offset", torch::zeros({dim}));
  }
  const std::string init = resolve_expert_init(o.expert_init, "kaiming_uniform");
  core = register_module("core", ExpertMlp(o.core_experts, dim, core_hidden, o.expert_drop, init));
  if (o.universal_experts > 0) {
    universal =
        register_module("universal", ExpertMlp(o.universal_experts, dim, universal_hidden, o.expert_drop, init));
  }
}

std::string SpheroMoe::describe() const {
  return fmt::format("{} core (hidden {}) + {} universal (hidden {}) experts, {} slot(s) each", options.core_experts,
                     core_hidden, options.universal_experts, universal_hidden, options.slots_per_expert);
}

torch::Tensor SpheroMoe::keys(const torch::Tensor& x) const {
  auto k = options.offset_scale ? x * key_scale + key_offset : x;
  return kernels::l2_normalize(k, kL2Eps, options.l2_norm == "add");
}

torch::Tensor SpheroMoe::queries() const {
  auto q = phi.reshape({-1, dim});
  if (slot_norm) {
    // LayerNorm's forward is non-const; the functional form with its parameters is the same op.
    q = F::layer_norm(
        q,
        F::LayerNormFuncOptions({dim}).weight(slot_norm->weight).bias(slot_norm->bias).eps(slot_norm->options.eps()));
  }
  if (options.offset_scale) {
    q = q * phi_scale + phi_offset;
  }
  return kernels::l2_normalize(q, kL2Eps, options.l2_norm == "add");
}

torch::Tensor SpheroMoe::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == dim, "SpheroMoe: expected [B, N, ", dim, "], got ", x.sizes());
  auto cos = kernels::matmul(keys(x), queries().t());  // [B, N, M], cosine similarities
  const double noise_mult = options.noise_mult >= 0 ? options.noise_mult : 1.0 / static_cast<double>(num_experts());
  // One sample shared by dispatch and combine, as in the authors' code.
  const bool noisy = noise_mult > 0 && (is_training() || options.noise_in_eval);
  // Dispatch logits come laid out [B, M, N], so the softmax over tokens is a last-dim one.
  auto t_d =
      options.temperature_min > 0 ? dispatch_temperature.clamp_min(options.temperature_min) : dispatch_temperature;
  auto t_c = options.temperature_min > 0 ? combine_temperature.clamp_min(options.temperature_min) : combine_temperature;
  auto [dl, cl] = sphero_logits(cos, t_d, t_c, noisy ? noise_mult : 0.0);
  auto dispatch = kernels::row_softmax(dl);
  auto combine = options.combine == "entmax15" ? kernels::entmax15(cl, 2) : kernels::row_softmax(cl);
  std::vector<ExpertMlp> groups{core};
  if (universal) {
    groups.push_back(universal);
  }
  const bool per_image = options.expert_drop_path_mode == "image";
  auto y =
      soft_route(x, dispatch, combine, groups, options.slots_per_expert, per_image ? 0.0 : drop_path, is_training());
  if (per_image) {
    // The authors' DropPath on the slot outputs [B, E*S, D] has one mask entry per image, and the
    // combine is linear in them: the same as dropping the layer's output of that image.
    y = nn::drop_path(y, drop_path, is_training());
  }
  last_aux_loss = torch::zeros({}, x.options());
  if (collect_stats) {
    last_stats = soft_routing_stats(dispatch, combine, num_experts());
  }
  return y;
}

double SpheroMoe::macs(int64_t tokens) const {
  const double N = static_cast<double>(tokens), D = static_cast<double>(dim);
  const double M = static_cast<double>(num_experts() * options.slots_per_expert);
  const double S = static_cast<double>(options.slots_per_expert);
  double m = 3.0 * N * M * D + core->macs(S);
  if (universal) {
    m += universal->macs(S);
  }
  return m;
}

}  // namespace moejet::moe
