#include "moejet/kernels/expert_bmm.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <limits>

#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/blas.h"
#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/parallel.h"
#include "moejet/kernels/precision.h"
#include "moejet/kernels/tracing.h"

namespace moejet::kernels {

namespace {

// How a [rows, cols] matrix of a 3-d tensor sits in memory, as BLAS sees it: row-major with
// leading dimension `ld` (stride (ld, 1)), or column-major (stride (1, ld)).
struct Layout {
  bool ok = false;
  bool row_major = true;
  int64_t ld = 0;
};

Layout layout_of(const torch::Tensor& t) {
  const int64_t rows = t.size(1), cols = t.size(2), s0 = t.stride(1), s1 = t.stride(2);
  // Strides of size-1 dims are arbitrary; such a dim never constrains the layout.
  if ((s1 == 1 || cols == 1) && (rows == 1 || s0 >= std::max<int64_t>(1, cols))) {
    return {true, true, rows == 1 ? std::max<int64_t>(1, cols) : s0};
  }
  if ((s0 == 1 || rows == 1) && (cols == 1 || s1 >= std::max<int64_t>(1, rows))) {
    return {true, false, cols == 1 ? std::max<int64_t>(1, rows) : s1};
  }
  return {};
}

bool fits_int(int64_t v) {
  return v <= std::numeric_limits<int>::max();
}

// oneDNN's matmul, fp32 results (bf16 operands included, so no cast of the result). Measured on
// the V-JetMoE-T shapes at batch 32 (98 experts x 32 rows x 192 x 768 and 196 x 32 x 192 x 192,
// 2 cores, fp32): one batched primitive ran the forward and input-gradient products at 1.4-2.4x
// OpenBLAS's thread-per-matrix sgemms and the routing products at 2x. The weight gradient's first
// operand is a transposed view ([E, out, T], T = 32 small): as it lies, one batched primitive ran
// at 32 GFLOP/s, one 2-d product per expert at 140; copied row-major first (a pass over E x T x
// out, small beside the product), one batched primitive runs it at 205 (bf16: 169 -> 272):
// `moejet_bench --benchmark_filter=ExpertBmm_WeightGrad`.
// `type`: the result's dtype (fp32, or bf16 for ProductOut::compute).
torch::Tensor onednn_expert_bmm(const torch::Tensor& a0, const torch::Tensor& b, const torch::Tensor& bias,
                                torch::ScalarType type) {
  const int64_t E = a0.size(0), M = a0.size(1), N = b.size(2);
  const bool a_transposed = a0.stride(2) != 1 && a0.size(2) > 1;
  const auto a = a_transposed && E > 1 ? a0.contiguous() : a0;
  if (E == 1) {
    auto out = torch::empty({E, M, N}, a.options().dtype(type));
    onednn_matmul_out(a[0], b[0], bias.defined() ? bias[0] : bias, out[0]);
    return out;
  }
  // A per-expert bias is no broadcast oneDNN's batched matmul runs fast (its reference kernel):
  // added to the fp32 products, which are then rounded once.
  auto out = torch::empty({E, M, N}, a.options().dtype(bias.defined() ? torch::kFloat : type));
  onednn_matmul_out(a, b, torch::Tensor(), out);
  if (!bias.defined()) {
    return out;
  }
  out.add_(bias.unsqueeze(1));
  return type == torch::kBFloat16 ? to_bf16(out) : out;
}

}  // namespace

torch::Tensor expert_bmm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias,
                         bool thread_per_matrix, ProductOut out_type) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1),
              "expert_bmm: expected a [E, M, K] and b [E, K, N], got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 2 && bias.size(0) == a.size(0) && bias.size(1) == b.size(2)),
              "expert_bmm: expected bias [E, N] = [", a.size(0), ", ", b.size(2), "], got ", bias.sizes());
  if (tracing()) {
    return bias.defined() ? torch::baddbmm(bias.unsqueeze(1), a, b) : torch::bmm(a, b);
  }
  // Named in profiler traces, since the BLAS path bypasses ATen's own bmm record.
  RECORD_FUNCTION("moejet::expert_bmm", std::vector<c10::IValue>({a, b}));
  const bool bf16 = a.scalar_type() == torch::kBFloat16 || b.scalar_type() == torch::kBFloat16 ||
                    (gemm_precision() == Precision::bf16 && a.is_floating_point());
  const auto A0 = bf16 ? to_bf16(a) : a, B0 = bf16 ? to_bf16(b) : b;
  const auto type = bf16 && out_type == ProductOut::compute ? torch::kBFloat16 : torch::kFloat;
  if (onednn_matmul_supports(A0, B0) && (!bias.defined() || bias.is_cpu())) {
    return onednn_expert_bmm(A0, B0, bias, type);
  }
  if (bf16) {
    // bf16 products (ATen's bmm), accumulated in fp32.
    auto out = to_fp32(torch::bmm(A0, B0));
    if (bias.defined()) {
      out.add_(bias.unsqueeze(1));
    }
    return type == torch::kBFloat16 ? to_bf16(out) : out;
  }
  const SgemmFn sgemm = blas_sgemm();
  const bool direct = sgemm != nullptr && a.is_cpu() && b.is_cpu() && a.scalar_type() == torch::kFloat &&
                      b.scalar_type() == torch::kFloat &&
                      (!bias.defined() || (bias.is_cpu() && bias.scalar_type() == torch::kFloat));
  if (!direct) {
    return bias.defined() ? torch::baddbmm(bias.unsqueeze(1), a, b) : torch::bmm(a, b);
  }
  const int64_t E = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  auto A = a, B = b;
  Layout la = layout_of(A), lb = layout_of(B);
  if (!la.ok) {
    A = A.contiguous();
    la = layout_of(A);
  }
  if (!lb.ok) {
    B = B.contiguous();
    lb = layout_of(B);
  }
  torch::Tensor out;
  float beta = 0.0f;
  if (bias.defined()) {
    out = bias.unsqueeze(1).expand({E, M, N}).contiguous();  // the GEMM accumulates onto it
    beta = 1.0f;
  } else {
    out = torch::empty({E, M, N}, a.options());
  }
  if (E == 0 || M == 0 || N == 0) {
    return out;
  }
  if (K == 0) {
    return bias.defined() ? out : out.zero_();
  }
  TORCH_CHECK(fits_int(M) && fits_int(N) && fits_int(K) && fits_int(la.ld) && fits_int(lb.ld),
              "expert_bmm: matrix too large for a 32-bit BLAS: ", a.sizes(), " x ", b.sizes());
  // Row-major out = A B is column-major out^T = B^T A^T: BLAS gets (B, A) with their layouts'
  // transposes swapped: a row-major matrix is its own transpose in column-major terms.
  const char tb = lb.row_major ? 'N' : 'T', ta = la.row_major ? 'N' : 'T';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int ldb = static_cast<int>(lb.ld), lda = static_cast<int>(la.ld), ldc = static_cast<int>(N);
  const float alpha = 1.0f;
  const float* ap = A.data_ptr<float>();
  const float* bp = B.data_ptr<float>();
  float* cp = out.data_ptr<float>();
  const int64_t sa = A.stride(0), sb = B.stride(0), sc = M * N;
  auto run = [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      sgemm(&tb, &ta, &m, &n, &k, &alpha, bp + e * sb, &ldb, ap + e * sa, &lda, &beta, cp + e * sc, &ldc);
    }
  };
  if (thread_per_matrix && E > 1) {
    SingleThreadedBlas guard;
    if (guard.active() && guard.previous_threads() > 1) {
      const int64_t threads = std::min<int64_t>(guard.previous_threads(), E);
      parallel_chunks(E, (E + threads - 1) / threads, run);
      return out;
    }
  }
  run(0, E);
  return out;
}

torch::Tensor bf16_batch_operand(const torch::Tensor& t) {
  // Without AMX no copy: oneDNN's kernel for the strided batch uses the instructions its others
  // would (attention's heads ran fastest in place there, kernels/attention.h).
  return to_bf16(onednn_amx() ? t.contiguous() : t);
}

namespace {

struct BatchedMatmulFn : torch::autograd::Function<BatchedMatmulFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b) {
    // In bf16, the rounded operands are what backward multiplies by: saved once, not re-cast.
    const bool bf16 = gemm_precision() == Precision::bf16;
    const auto as = bf16 ? bf16_batch_operand(a) : a, bs = bf16 ? bf16_batch_operand(b) : b;
    ctx->save_for_backward({as, bs});
    return expert_bmm(as, bs);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& g = grads[0];
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) {
      ga = expert_bmm(g, saved[1].transpose(1, 2));
    }
    if (ctx->needs_input_grad(1)) {
      gb = expert_bmm(saved[0].transpose(1, 2), g);
    }
    return {ga, gb};
  }
};

}  // namespace

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b) {
  if (tracing()) {
    return torch::bmm(a, b);
  }
  return BatchedMatmulFn::apply(a, b);
}

}  // namespace moejet::kernels
