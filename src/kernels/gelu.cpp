#include "moejet/kernels/gelu.h"

#include <torch/torch.h>

#include "avx512_rows.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/bf16_weights.h"
#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/parallel.h"
#include "moejet/kernels/tracing.h"

namespace moejet::kernels {

namespace {

#ifdef MOEJET_X86_AVX512
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see avx512_rows.h

// y = x Phi(x) and dy/dx = Phi(x) + x phi(x) over n values. erf as Abramowitz & Stegun 7.1.26
// (absolute error < 1.5e-7, the form of ATen's vectorised erf), whose exp(-z^2) at z = x / sqrt 2
// is phi's exp(-x^2 / 2).
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void gelu_avx512(const T* x, T* y, T* dy, int64_t n) {
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  const __m512 inv_sqrt2 = _mm512_set1_ps(0.70710678f), inv_sqrt_2pi = _mm512_set1_ps(0.39894228f);
  const __m512 p = _mm512_set1_ps(0.3275911f);
  const __m512 a1 = _mm512_set1_ps(0.254829592f), a2 = _mm512_set1_ps(-0.284496736f), a3 = _mm512_set1_ps(1.421413741f),
               a4 = _mm512_set1_ps(-1.453152027f), a5 = _mm512_set1_ps(1.061405429f);
  const __m512 sign_bit = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = avx512_rows::tail_mask(n - i);
    const __m512 v = avx512_rows::load_row(x, i, m);
    const __m512 z = _mm512_mul_ps(_mm512_abs_ps(v), inv_sqrt2);  // |x| / sqrt 2
    const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(p, z, one));
    __m512 poly = _mm512_fmadd_ps(a5, t, a4);
    poly = _mm512_fmadd_ps(poly, t, a3);
    poly = _mm512_fmadd_ps(poly, t, a2);
    poly = _mm512_fmadd_ps(poly, t, a1);
    poly = _mm512_mul_ps(poly, t);
    const __m512 e = avx512_rows::exp_nonpositive(_mm512_mul_ps(_mm512_mul_ps(v, v), _mm512_set1_ps(-0.5f)));
    const __m512 erf_abs = _mm512_fnmadd_ps(poly, e, one);
    const __m512 erf = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(erf_abs),
                        _mm512_and_si512(_mm512_castps_si512(sign_bit), _mm512_castps_si512(v))));  // erf is odd
    const __m512 cdf = _mm512_mul_ps(half, _mm512_add_ps(one, erf));
    avx512_rows::store_row(y, i, m, _mm512_mul_ps(v, cdf));
    if (dy != nullptr) {
      avx512_rows::store_row(dy, i, m, _mm512_fmadd_ps(_mm512_mul_ps(v, e), inv_sqrt_2pi, cdf));
    }
  }
}

// out = g * d over n values: g in the output's dtype or fp32, d in the output's.
template <typename G, typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void mul_avx512(const G* g, const T* d, T* out,
                                                                                int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = avx512_rows::tail_mask(n - i);
    avx512_rows::store_row(out, i, m, _mm512_mul_ps(avx512_rows::load_row(g, i, m), avx512_rows::load_row(d, i, m)));
  }
}
#pragma GCC diagnostic pop
#endif

// Values per thread below which splitting costs more than it saves (as bf16_cast).
constexpr int64_t kGeluMinChunk = 1 << 14;

uint16_t* bf16_bits(const torch::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr());
}

// y = gelu(x) and, when `dy` is defined, the derivative into it (x contiguous, all alike).
void gelu_forward(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& dy) {
#ifdef MOEJET_X86_AVX512
  parallel_chunks(x.numel(), kGeluMinChunk, [&](int64_t b, int64_t e) {
    if (x.scalar_type() == torch::kBFloat16) {
      gelu_avx512(bf16_bits(x) + b, bf16_bits(y) + b, dy.defined() ? bf16_bits(dy) + b : nullptr, e - b);
    } else {
      gelu_avx512(x.data_ptr<float>() + b, y.data_ptr<float>() + b, dy.defined() ? dy.data_ptr<float>() + b : nullptr,
                  e - b);
    }
  });
#else
  (void)x, (void)y, (void)dy;
#endif
}

struct GeluFn : torch::autograd::Function<GeluFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input) {
    const auto x = input.contiguous();
    auto y = torch::empty_like(x), dy = torch::empty_like(x);
    gelu_forward(x, y, dy);
    ctx->save_for_backward({dy});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto dy = ctx->get_saved_variables()[0];
    auto g = grads[0].contiguous();
    if (g.scalar_type() != torch::kFloat && g.scalar_type() != dy.scalar_type()) {
      g = g.to(dy.scalar_type());
    }
    auto gx = torch::empty_like(dy);
#ifdef MOEJET_X86_AVX512
    parallel_chunks(dy.numel(), kGeluMinChunk, [&](int64_t b, int64_t e) {
      if (dy.scalar_type() == torch::kFloat) {
        mul_avx512(g.data_ptr<float>() + b, dy.data_ptr<float>() + b, gx.data_ptr<float>() + b, e - b);
      } else if (g.scalar_type() == torch::kFloat) {
        mul_avx512(g.data_ptr<float>() + b, bf16_bits(dy) + b, bf16_bits(gx) + b, e - b);
      } else {
        mul_avx512(bf16_bits(g) + b, bf16_bits(dy) + b, bf16_bits(gx) + b, e - b);
      }
    });
#endif
    return {gx};
  }
};

// linear(gelu(x), weight, bias) with products in x's dtype and an fp32 result. Backward: the
// input gradient (g W) * gelu'(x) in one product with the multiplication as its post-op, the
// weight gradient g^T gelu(x) straight to fp32.
struct GeluLinearFn : torch::autograd::Function<GeluLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    const int64_t H = input.size(-1), D = weight.size(0);
    const auto x = input.reshape({-1, H}).contiguous();
    auto y = torch::empty_like(x), dy = torch::empty_like(x);
    gelu_forward(x, y, dy);
    // The products' operand: bf16 under bf16 products.
    const auto w = x.scalar_type() == torch::kBFloat16 ? bf16_weight(weight) : weight;
    auto out = torch::empty({x.size(0), D}, x.options().dtype(torch::kFloat));
    onednn_matmul_out(y, w.t(), bias, out);
    ctx->save_for_backward({y, dy, w});
    ctx->saved_data["sizes"] = input.sizes().vec();
    auto sizes = input.sizes().vec();
    sizes.back() = D;
    return out.view(sizes);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &y = saved[0], &dy = saved[1], &w = saved[2];
    const auto g32 = grads[0].reshape({-1, w.size(0)}).contiguous();
    const auto g = y.scalar_type() == torch::kBFloat16 ? to_bf16(g32) : g32.to(y.scalar_type());
    torch::autograd::variable_list out(3);
    if (ctx->needs_input_grad(0)) {
      auto dx = torch::empty_like(y);
      onednn_matmul_out(g, w, {}, dx, 1.0, dy);
      out[0] = dx.view(ctx->saved_data["sizes"].toIntVector());
    }
    if (ctx->needs_input_grad(1)) {
      out[1] = torch::empty(w.sizes(), w.options().dtype(torch::kFloat));
      onednn_matmul_out(g.t(), y, {}, out[1]);
    }
    if (ctx->needs_input_grad(2)) {
      out[2] = g32.sum(0, false, torch::kFloat);
    }
    return out;
  }
};

bool gelu_fused(const torch::Tensor& x) {
#ifdef MOEJET_X86_AVX512
  return !tracing() && avx512_rows::cpu_has_avx512_rows() && x.is_cpu() &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16);
#else
  (void)x;
  return false;
#endif
}

}  // namespace

torch::Tensor gelu(const torch::Tensor& x) {
  if (gelu_fused(x)) {
    if (torch::GradMode::is_enabled() && x.requires_grad()) {
      return GeluFn::apply(x);
    }
    // Nothing will ask for the gradient (evaluation, inference): no derivative to keep.
    const auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    gelu_forward(xc, y, torch::Tensor());
    return y;
  }
  return torch::gelu(x);
}

bool fused_gelu_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return gelu_fused(x) && onednn_available() && torch::GradMode::is_enabled() && x.dim() >= 2 && x.numel() > 0 &&
         weight.dim() == 2 && weight.size(1) == x.size(-1) && weight.scalar_type() == torch::kFloat &&
         weight.is_cpu() && bias.defined() && bias.scalar_type() == torch::kFloat && bias.is_cpu();
}

torch::Tensor gelu_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  TORCH_CHECK(fused_gelu_linear(x, weight, bias), "gelu_linear: no fused kernel for x ", x.sizes(), " ", x.dtype(),
              ", weight ", weight.sizes(), " ", weight.dtype(), " (check fused_gelu_linear first)");
  return GeluLinearFn::apply(x, weight, bias);
}

}  // namespace moejet::kernels
