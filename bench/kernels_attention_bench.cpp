// kernels::attention against the tensor ops it replaced in the ViT's Attention (q scaled, two
// batched products through kernels::matmul, softmax, heads merged by a copy), forward and
// backward, on ViT-T's attention at batch 32: qkv [32, 197, 576], 3 heads of 64, fp32 and bf16.
//
// "Ours" is what kernels::attention picks here; HeadsInPlace and HeadsCopied time both layouts.
//
//   build/bench/moejet_bench --benchmark_filter=Attention

#include <cmath>

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/attention.h"
#include "moejet/kernels/matmul.h"
#include "moejet/kernels/precision.h"

namespace {

namespace k = moejet::kernels;

constexpr int64_t kAttnBatch = 32, kAttnTokens = 197, kAttnHeads = 3, kAttnDim = 192;

torch::Tensor attention_tensor_ops(const torch::Tensor& qkv, double scale) {
  auto t =
      qkv.reshape({kAttnBatch, kAttnTokens, 3, kAttnHeads, kAttnDim / kAttnHeads}).permute({2, 0, 3, 1, 4}).unbind(0);
  auto attn = k::matmul(t[0] * scale, t[1].transpose(-2, -1), k::ProductOut::compute).softmax(-1);
  return k::matmul(attn, t[2], k::ProductOut::compute).transpose(1, 2).reshape({kAttnBatch, kAttnTokens, kAttnDim});
}

template <class Fn>
void attention_forward_backward(benchmark::State& state, k::Precision precision, const Fn& fn) {
  k::PrecisionScope scope(precision);
  torch::manual_seed(0);
  const auto type = precision == k::Precision::bf16 ? torch::kBFloat16 : torch::kFloat;
  auto qkv = torch::randn({kAttnBatch, kAttnTokens, 3 * kAttnDim}).to(type).requires_grad_();
  const auto g = torch::randn({kAttnBatch, kAttnTokens, kAttnDim}).to(type);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kAttnDim / kAttnHeads));
  for (auto _ : state) {
    qkv.mutable_grad() = torch::Tensor();
    fn(qkv, scale).backward(g);
    benchmark::DoNotOptimize(qkv.grad().data_ptr());
  }
  // Six products of [N, hd] x [hd, N] size per head: two forward, four backward.
  moejet::bench::set_gflops(state,
                            6.0 * 2 * kAttnBatch * kAttnHeads * kAttnTokens * kAttnTokens * (kAttnDim / kAttnHeads));
}

void attention_fused(benchmark::State& s, k::Precision p, k::AttentionHeads layout = k::AttentionHeads::automatic) {
  attention_forward_backward(
      s, p, [layout](const torch::Tensor& qkv, double scale) { return k::attention(qkv, kAttnHeads, scale, layout); });
}
void attention_ops(benchmark::State& s, k::Precision p) {
  attention_forward_backward(s, p, attention_tensor_ops);
}
void BM_Attention_Fp32_Ours(benchmark::State& s) {
  attention_fused(s, k::Precision::fp32);
}
void BM_Attention_Fp32_TensorOps(benchmark::State& s) {
  attention_ops(s, k::Precision::fp32);
}
void BM_Attention_Bf16_Ours(benchmark::State& s) {
  attention_fused(s, k::Precision::bf16);
}
void BM_Attention_Bf16_TensorOps(benchmark::State& s) {
  attention_ops(s, k::Precision::bf16);
}
// Both layouts of the heads, whichever "Ours" takes on this machine (kernels::attention_heads_for).
void BM_Attention_Fp32_HeadsInPlace(benchmark::State& s) {
  attention_fused(s, k::Precision::fp32, k::AttentionHeads::in_place);
}
void BM_Attention_Fp32_HeadsCopied(benchmark::State& s) {
  attention_fused(s, k::Precision::fp32, k::AttentionHeads::copied);
}
void BM_Attention_Bf16_HeadsInPlace(benchmark::State& s) {
  attention_fused(s, k::Precision::bf16, k::AttentionHeads::in_place);
}
void BM_Attention_Bf16_HeadsCopied(benchmark::State& s) {
  attention_fused(s, k::Precision::bf16, k::AttentionHeads::copied);
}

BENCHMARK(BM_Attention_Fp32_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Fp32_TensorOps)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Bf16_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Bf16_TensorOps)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Fp32_HeadsInPlace)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Fp32_HeadsCopied)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Bf16_HeadsInPlace)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention_Bf16_HeadsCopied)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
