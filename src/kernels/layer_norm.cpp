#include "moejet/kernels/layer_norm.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "avx512_rows.h"
#include "moejet/kernels/parallel.h"
#include "moejet/kernels/precision.h"
#include "moejet/kernels/tracing.h"

namespace moejet::kernels {

namespace {

// Rows per block of the weight and bias gradients' partial sums: fixed, so that the sums do not
// depend on how the rows are split over threads.
constexpr int64_t kRowsPerBlock = 128;

#ifdef MOEJET_X86_AVX512
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see avx512_rows.h

// Rows [r0, r1) of x (n wide): y = (x - mean) * rstd * w + b in Out, mean and rstd kept.
template <typename Out>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void layer_norm_rows(const float* x, const float* w,
                                                                                     const float* b, Out* y,
                                                                                     float* mean, float* rstd,
                                                                                     int64_t r0, int64_t r1, int64_t n,
                                                                                     float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * n;
    // The mean of x - x[0]: rows far from zero with a small spread keep their digits (a plain
    // sum of 192 values near 100 loses a tenth of a 0.01 spread).
    const __m512 x0 = _mm512_set1_ps(xr[0]);
    __m512 s = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      s = _mm512_add_ps(s, _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr + i), x0));
    }
    const float mu = xr[0] + _mm512_reduce_add_ps(s) / static_cast<float>(n);
    const __m512 vmu = _mm512_set1_ps(mu);
    __m512 q = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr + i), vmu);
      q = _mm512_fmadd_ps(d, d, q);
    }
    const float rs = 1.0f / std::sqrt(_mm512_reduce_add_ps(q) / static_cast<float>(n) + eps);
    mean[r] = mu;
    rstd[r] = rs;
    const __m512 vrs = _mm512_set1_ps(rs);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      const __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vmu), vrs);
      avx512_rows::store_row(y + r * n, i, m,
                             _mm512_fmadd_ps(xh, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
  }
}

// Rows [r0, r1): dx = rstd (g w - mean(g w) - xhat mean(g w xhat)); dw += g xhat, db += g into
// the block's fp32 partial sums.
template <typename G>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void layer_norm_backward_rows(
    const float* x, const float* w, const G* g, const float* mean, const float* rstd, float* dx, float* dw, float* db,
    int64_t r0, int64_t r1, int64_t n) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * n;
    const G* gr = g + r * n;
    const __m512 vmu = _mm512_set1_ps(mean[r]), vrs = _mm512_set1_ps(rstd[r]);
    __m512 sg = _mm512_setzero_ps(), sgx = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      const __m512 gi = avx512_rows::load_row(gr, i, m);
      const __m512 xh = _mm512_maskz_mul_ps(m, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vmu), vrs);
      const __m512 gw = _mm512_mul_ps(gi, _mm512_maskz_loadu_ps(m, w + i));
      sg = _mm512_add_ps(sg, gw);
      sgx = _mm512_fmadd_ps(gw, xh, sgx);
      _mm512_mask_storeu_ps(dw + i, m, _mm512_fmadd_ps(gi, xh, _mm512_maskz_loadu_ps(m, dw + i)));
      _mm512_mask_storeu_ps(db + i, m, _mm512_add_ps(gi, _mm512_maskz_loadu_ps(m, db + i)));
    }
    const __m512 c2 = _mm512_set1_ps(_mm512_reduce_add_ps(sg) / static_cast<float>(n));
    const __m512 c1 = _mm512_set1_ps(_mm512_reduce_add_ps(sgx) / static_cast<float>(n));
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      const __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vmu), vrs);
      const __m512 gw = _mm512_mul_ps(avx512_rows::load_row(gr, i, m), _mm512_maskz_loadu_ps(m, w + i));
      _mm512_mask_storeu_ps(dx + r * n + i, m, _mm512_mul_ps(vrs, _mm512_sub_ps(_mm512_fnmadd_ps(xh, c1, gw), c2)));
    }
  }
}

#pragma GCC diagnostic pop
#endif

struct LayerNormFn : torch::autograd::Function<LayerNormFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps, bool bf16_out) {
    const auto x = input.contiguous();
    const auto w = weight.contiguous(), b = bias.contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / n;
    auto y = torch::empty(x.sizes(), x.options().dtype(bf16_out ? torch::kBFloat16 : torch::kFloat));
    auto mean = torch::empty({rows}, x.options()), rstd = torch::empty({rows}, x.options());
#ifdef MOEJET_X86_AVX512
    parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
      if (bf16_out) {
        layer_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                        reinterpret_cast<uint16_t*>(y.data_ptr()), mean.data_ptr<float>(), rstd.data_ptr<float>(), r0,
                        r1, n, static_cast<float>(eps));
      } else {
        layer_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(), y.data_ptr<float>(),
                        mean.data_ptr<float>(), rstd.data_ptr<float>(), r0, r1, n, static_cast<float>(eps));
      }
    });
#endif
    ctx->save_for_backward({x, w, mean, rstd});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &mean = saved[2], &rstd = saved[3];
    auto g = grads[0].contiguous();
    if (g.scalar_type() != torch::kBFloat16 && g.scalar_type() != torch::kFloat) {
      g = g.to(torch::kFloat);
    }
    const int64_t n = x.size(-1), rows = x.numel() / n;
    const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    auto dx = torch::empty_like(x);
    auto partial = torch::zeros({blocks, 2, n}, x.options());  // per block: dw, db
#ifdef MOEJET_X86_AVX512
    parallel_chunks(blocks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r0 = k * kRowsPerBlock, r1 = std::min(rows, r0 + kRowsPerBlock);
        float* dw = partial.data_ptr<float>() + k * 2 * n;
        if (g.scalar_type() == torch::kBFloat16) {
          layer_norm_backward_rows(x.data_ptr<float>(), w.data_ptr<float>(),
                                   reinterpret_cast<const uint16_t*>(g.data_ptr()), mean.data_ptr<float>(),
                                   rstd.data_ptr<float>(), dx.data_ptr<float>(), dw, dw + n, r0, r1, n);
        } else {
          layer_norm_backward_rows(x.data_ptr<float>(), w.data_ptr<float>(), g.data_ptr<float>(),
                                   mean.data_ptr<float>(), rstd.data_ptr<float>(), dx.data_ptr<float>(), dw, dw + n, r0,
                                   r1, n);
        }
      }
    });
#endif
    // The blocks' partial sums in block order, in double: the same result on any thread count.
    auto sums = torch::zeros({2, n}, x.options().dtype(torch::kDouble));
    const float* pp = partial.data_ptr<float>();
    double* sp = sums.data_ptr<double>();
    for (int64_t k = 0; k < blocks; ++k) {
      for (int64_t j = 0; j < 2 * n; ++j) {
        sp[j] += pp[k * 2 * n + j];
      }
    }
    const auto wb = sums.to(torch::kFloat);
    return {dx, wb[0], wb[1], torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
#ifdef MOEJET_X86_AVX512
  auto fp32_cpu = [](const torch::Tensor& t) { return t.defined() && t.is_cpu() && t.scalar_type() == torch::kFloat; };
  return !tracing() && avx512_rows::cpu_has_avx512_rows() && fp32_cpu(x) && x.dim() >= 1 && x.numel() > 0 &&
         fp32_cpu(weight) && fp32_cpu(bias) && weight.dim() == 1 && weight.size(0) == x.size(-1) && bias.dim() == 1 &&
         bias.size(0) == x.size(-1);
#else
  (void)x, (void)weight, (void)bias;
  return false;
#endif
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                         ProductOut out) {
  if (!fused_layer_norm(x, weight, bias)) {
    return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  }
  const bool bf16_out = out == ProductOut::compute && gemm_precision() == Precision::bf16;
  return LayerNormFn::apply(x, weight, bias, eps, bf16_out);
}

}  // namespace moejet::kernels
