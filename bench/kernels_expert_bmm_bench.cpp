// kernels::expert_bmm (one sgemm per expert, thread per matrix) against torch::bmm, on the expert
// MLP shapes of V-JetMoE-T at batch 32: 98 core experts, one slot each, so 32 rows per expert,
// [32 x 192] x [192 x 768] (fc1) and the fc1 weight gradient [768 x 32] x [32 x 192]. In bf16,
// the forward on bf16 operands, and from fp32 master weights rounded on the way in, as a bf16
// train step runs it (2026-12-02, 2 threads: fp32 5.8-7.6 ms, bf16 operands 3.7-3.8 ms, from fp32
// 6.0-6.1 ms: the rounding costs as much as the product saves).
//
//   build/bench/moejet_bench --benchmark_filter=ExpertBmm

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/expert_bmm.h"
#include "moejet/kernels/precision.h"

namespace {

constexpr int64_t kExperts = 98, kRows = 32, kDim = 192, kHidden = 768;

void run_expert_bmm(benchmark::State& state, bool ours, bool weight_grad, bool copy_transposed = false,
                    torch::ScalarType dtype = torch::kFloat) {
  torch::manual_seed(0);
  // Forward: x [E, rows, dim] x w^T [E, dim, hidden]. Weight gradient: gy^T [E, hidden, rows] x x.
  auto a =
      weight_grad ? torch::randn({kExperts, kRows, kHidden}).transpose(1, 2) : torch::randn({kExperts, kRows, kDim});
  auto b =
      weight_grad ? torch::randn({kExperts, kRows, kDim}) : torch::randn({kExperts, kHidden, kDim}).transpose(1, 2);
  a = a.to(dtype);
  b = b.to(dtype);
  for (auto _ : state) {
    // copy_transposed: gy^T laid out row-major first (a small copy), then one batched product.
    auto c = ours ? moejet::kernels::expert_bmm(copy_transposed ? a.contiguous() : a, b) : torch::bmm(a, b);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  moejet::bench::set_gflops(state, 2.0 * kExperts * kRows * kDim * kHidden);
}

void BM_ExpertBmm_Forward_Ours(benchmark::State& s) {
  run_expert_bmm(s, true, false);
}
void BM_ExpertBmm_Forward_TorchBmm(benchmark::State& s) {
  run_expert_bmm(s, false, false);
}
void BM_ExpertBmm_Forward_Bf16Operands_Ours(benchmark::State& s) {
  run_expert_bmm(s, true, false, false, torch::kBFloat16);
}
// What a bf16 step's forward does: fp32 master weights rounded to bf16 on the way in.
void BM_ExpertBmm_Forward_Bf16FromFp32_Ours(benchmark::State& state) {
  torch::manual_seed(0);
  auto a = torch::randn({kExperts, kRows, kDim});
  auto b = torch::randn({kExperts, kHidden, kDim});
  moejet::kernels::PrecisionScope bf16(moejet::kernels::Precision::bf16);
  for (auto _ : state) {
    auto c = moejet::kernels::expert_bmm(moejet::kernels::to_bf16(a), moejet::kernels::to_bf16(b).transpose(1, 2));
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  moejet::bench::set_gflops(state, 2.0 * kExperts * kRows * kDim * kHidden);
}
void BM_ExpertBmm_WeightGrad_Ours(benchmark::State& s) {
  run_expert_bmm(s, true, true);
}
void BM_ExpertBmm_WeightGrad_TorchBmm(benchmark::State& s) {
  run_expert_bmm(s, false, true);
}
void BM_ExpertBmm_WeightGrad_CopiedTransposeOurs(benchmark::State& s) {
  run_expert_bmm(s, true, true, true);
}
void BM_ExpertBmm_WeightGrad_Bf16_Ours(benchmark::State& s) {
  run_expert_bmm(s, true, true, false, torch::kBFloat16);
}
void BM_ExpertBmm_WeightGrad_Bf16_CopiedTransposeOurs(benchmark::State& s) {
  run_expert_bmm(s, true, true, true, torch::kBFloat16);
}
BENCHMARK(BM_ExpertBmm_WeightGrad_CopiedTransposeOurs)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_WeightGrad_Bf16_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_WeightGrad_Bf16_CopiedTransposeOurs)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_Forward_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_Forward_Bf16Operands_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_Forward_Bf16FromFp32_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_Forward_TorchBmm)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_WeightGrad_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertBmm_WeightGrad_TorchBmm)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
