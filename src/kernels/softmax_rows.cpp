#include "softmax_rows.h"

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "avx512_rows.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/parallel.h"

namespace moejet::kernels {

namespace {

#ifdef MOEJET_X86_AVX512
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see avx512_rows.h

// Softmax of `rows` rows of n fp32 scores into p (fp32 or bf16); `work` holds one row.
template <typename Out>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void softmax_rows_avx512(const float* s, Out* p,
                                                                                         int64_t rows, int64_t n,
                                                                                         float* work) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = s + r * n;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
    }
    const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      const __m512 e = avx512_rows::exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
      sum = _mm512_mask_add_ps(sum, m, sum, e);
      _mm512_mask_storeu_ps(work + i, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      avx512_rows::store_row(p + r * n, i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, work + i), inv));
    }
  }
}

// The softmax's backward row by row: ds = p (dp - sum(dp p)), p and ds fp32 or bf16.
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void softmax_backward_rows_avx512(const float* dp,
                                                                                                  const T* p, T* ds,
                                                                                                  int64_t rows,
                                                                                                  int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dp + r * n;
    const T* y = p + r * n;
    __m512 dot = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      dot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + i), avx512_rows::load_row(y, i, m), dot);
    }
    const __m512 vdot = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_rows::tail_mask(n - i);
      avx512_rows::store_row(
          ds + r * n, i, m,
          _mm512_mul_ps(avx512_rows::load_row(y, i, m), _mm512_sub_ps(_mm512_maskz_loadu_ps(m, g + i), vdot)));
    }
  }
}

#pragma GCC diagnostic pop
#endif

}  // namespace

torch::Tensor softmax_rows(const torch::Tensor& s, torch::ScalarType type) {
  const int64_t n = s.size(-1), rows = s.numel() / n;
#ifdef MOEJET_X86_AVX512
  if (avx512_rows::cpu_has_avx512_rows()) {
    auto p = torch::empty(s.sizes(), s.options().dtype(type));
    const float* sp = s.data_ptr<float>();
    parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
      std::vector<float> work(static_cast<size_t>(n) + 16);
      if (type == torch::kBFloat16) {
        softmax_rows_avx512(sp + r0 * n, reinterpret_cast<uint16_t*>(p.data_ptr()) + r0 * n, r1 - r0, n, work.data());
      } else {
        softmax_rows_avx512(sp + r0 * n, p.data_ptr<float>() + r0 * n, r1 - r0, n, work.data());
      }
    });
    return p;
  }
#endif
  auto p = torch::empty_like(s);
  auto s2 = s.view({rows, n}), p2 = p.view({rows, n});
  parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
    torch::NoGradGuard no_grad;
    auto out = p2.narrow(0, r0, r1 - r0);
    at::_softmax_out(out, s2.narrow(0, r0, r1 - r0), 1, false);
  });
  return type == torch::kBFloat16 ? to_bf16(p) : p;
}

torch::Tensor softmax_backward_rows(const torch::Tensor& dp, const torch::Tensor& p) {
  const int64_t n = p.size(-1), rows = p.numel() / n;
#ifdef MOEJET_X86_AVX512
  if (avx512_rows::cpu_has_avx512_rows()) {
    auto ds = torch::empty_like(p);
    const float* gp = dp.data_ptr<float>();
    parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
      if (p.scalar_type() == torch::kBFloat16) {
        softmax_backward_rows_avx512(gp + r0 * n, reinterpret_cast<const uint16_t*>(p.data_ptr()) + r0 * n,
                                     reinterpret_cast<uint16_t*>(ds.data_ptr()) + r0 * n, r1 - r0, n);
      } else {
        softmax_backward_rows_avx512(gp + r0 * n, p.data_ptr<float>() + r0 * n, ds.data_ptr<float>() + r0 * n, r1 - r0,
                                     n);
      }
    });
    return ds;
  }
#endif
  auto p32 = to_fp32(p);
  auto ds = torch::empty_like(p32);
  auto dp2 = dp.view({rows, n}), p2 = p32.view({rows, n}), ds2 = ds.view({rows, n});
  parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
    torch::NoGradGuard no_grad;
    auto out = ds2.narrow(0, r0, r1 - r0);
    at::_softmax_backward_data_out(out, dp2.narrow(0, r0, r1 - r0), p2.narrow(0, r0, r1 - r0), 1, torch::kFloat);
  });
  return p.scalar_type() == torch::kBFloat16 ? to_bf16(ds) : ds;
}

}  // namespace moejet::kernels
