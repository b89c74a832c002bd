#include "moejet/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "avx512_rows.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/parallel.h"
#include "moejet/kernels/tracing.h"

namespace moejet::kernels {

namespace {

// Rows of at least this many elements per thread (as row_ops): below it a thread costs more
// than it saves.
int64_t min_rows(int64_t n) {
  return std::max<int64_t>(1, 16384 / n);
}

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

// q, k or v of every head where it lies in qkv: [B, N, 3, H, hd] -> [B, H, N, hd].
torch::Tensor heads(const torch::Tensor& qkv5, int64_t which) {
  return qkv5.select(2, which).permute({0, 2, 1, 3});
}

// Softmax along the last dim of contiguous fp32 scores, as `type` (fp32 or bf16), rows split
// over the threads. With AVX-512 (BF16) one pass per row writes the result in its dtype; else
// libtorch's vectorised kernel on each range, then the cast.
torch::Tensor softmax_rows(const torch::Tensor& s, torch::ScalarType type) {
  const int64_t n = s.size(-1), rows = s.numel() / n;
#ifdef MOEJET_X86_AVX512
  if (avx512_rows::cpu_has_avx512_rows()) {
    auto p = torch::empty(s.sizes(), s.options().dtype(type));
    const float* sp = s.data_ptr<float>();
    parallel_chunks(rows, min_rows(n), [&](int64_t r0, int64_t r1) {
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
  parallel_chunks(rows, min_rows(n), [&](int64_t r0, int64_t r1) {
    auto out = p2.narrow(0, r0, r1 - r0);
    at::_softmax_out(out, s2.narrow(0, r0, r1 - r0), 1, false);
  });
  return type == torch::kBFloat16 ? to_bf16(p) : p;
}

// The softmax's backward, P (dP - rowsum(dP P)), from contiguous fp32 dP and P of `type`, as
// `type`.
torch::Tensor softmax_backward_rows(const torch::Tensor& dp, const torch::Tensor& p) {
  const int64_t n = p.size(-1), rows = p.numel() / n;
#ifdef MOEJET_X86_AVX512
  if (avx512_rows::cpu_has_avx512_rows()) {
    auto ds = torch::empty_like(p);
    const float* gp = dp.data_ptr<float>();
    parallel_chunks(rows, min_rows(n), [&](int64_t r0, int64_t r1) {
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
  parallel_chunks(rows, min_rows(n), [&](int64_t r0, int64_t r1) {
    auto out = ds2.narrow(0, r0, r1 - r0);
    at::_softmax_backward_data_out(out, dp2.narrow(0, r0, r1 - r0), p2.narrow(0, r0, r1 - r0), 1, torch::kFloat);
  });
  return p.scalar_type() == torch::kBFloat16 ? to_bf16(ds) : ds;
}

struct AttentionFn : torch::autograd::Function<AttentionFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv_in, int64_t num_heads,
                               double scale) {
    const auto qkv = qkv_in.contiguous();
    const int64_t B = qkv.size(0), N = qkv.size(1), D = qkv.size(2) / 3, hd = D / num_heads;
    const auto type = qkv.scalar_type();
    const auto qkv5 = qkv.view({B, N, 3, num_heads, hd});
    const auto q = heads(qkv5, 0), k = heads(qkv5, 1), v = heads(qkv5, 2);
    auto scores = torch::empty({B, num_heads, N, N}, qkv.options().dtype(torch::kFloat));
    onednn_matmul_out(q, k.transpose(-2, -1), {}, scores, scale);
    // The probabilities only feed products: kept in the products' dtype.
    const auto probs = softmax_rows(scores, type);
    auto out = torch::empty({B, N, num_heads, hd}, qkv.options());
    onednn_matmul_out(probs, v, {}, out.permute({0, 2, 1, 3}));
    ctx->save_for_backward({qkv, probs});
    ctx->saved_data["num_heads"] = num_heads;
    ctx->saved_data["scale"] = scale;
    return out.view({B, N, D});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& qkv = saved[0];
    const auto& probs = saved[1];
    const int64_t num_heads = ctx->saved_data["num_heads"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t B = qkv.size(0), N = qkv.size(1), D = qkv.size(2) / 3, hd = D / num_heads;
    const auto type = qkv.scalar_type();
    const auto qkv5 = qkv.view({B, N, 3, num_heads, hd});
    const auto q = heads(qkv5, 0), k = heads(qkv5, 1), v = heads(qkv5, 2);
    const auto g = grads[0].to(type).contiguous().view({B, N, num_heads, hd}).permute({0, 2, 1, 3});
    auto dprobs = torch::empty({B, num_heads, N, N}, qkv.options().dtype(torch::kFloat));
    onednn_matmul_out(g, v.transpose(-2, -1), {}, dprobs);
    const auto dscores = softmax_backward_rows(dprobs, probs);
    auto dqkv = torch::empty({B, N, 3, num_heads, hd}, qkv.options());
    // scores = scale q k^T: the scale goes into both of its gradients' products.
    onednn_matmul_out(dscores, k, {}, heads(dqkv, 0), scale);
    onednn_matmul_out(dscores.transpose(-2, -1), q, {}, heads(dqkv, 1), scale);
    onednn_matmul_out(probs.transpose(-2, -1), g, {}, heads(dqkv, 2));
    return {dqkv.view({B, N, 3 * D}), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_attention(const torch::Tensor& qkv) {
  return !tracing() && onednn_available() && qkv.defined() && qkv.is_cpu() && qkv.dim() == 3 &&
         (qkv.scalar_type() == torch::kFloat || qkv.scalar_type() == torch::kBFloat16) && qkv.numel() > 0;
}

torch::Tensor attention(const torch::Tensor& qkv, int64_t num_heads, double scale) {
  TORCH_CHECK(qkv.dim() == 3 && num_heads > 0 && qkv.size(2) % (3 * num_heads) == 0,
              "attention: expected qkv [B, N, 3 * heads * head_dim] for ", num_heads, " heads, got ", qkv.sizes());
  TORCH_CHECK(fused_attention(qkv), "attention: no fused kernel for ", qkv.dtype(), " on ", qkv.device(),
              " (check fused_attention first)");
  return AttentionFn::apply(qkv, num_heads, scale);
}

}  // namespace moejet::kernels
