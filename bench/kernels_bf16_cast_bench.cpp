// kernels::sum_fp32 against ATen's sum with an fp32 dtype, on bf16 bias gradients: a ViT-T fc1
// output gradient at batch 32 ([6304, 768], one slice, the rows split over the threads) and
// V-JetMoE-T's expert fc1 output gradient ([98, 32, 768], one expert a thread).
//
//   build/bench/moejet_bench --benchmark_filter=SumFp32

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/bf16_cast.h"

namespace {

template <class Fn>
void sum_bf16(benchmark::State& state, std::vector<int64_t> sizes, int64_t dim, const Fn& fn) {
  torch::manual_seed(0);
  const auto g = torch::randn(sizes).to(torch::kBFloat16);
  for (auto _ : state) {
    auto s = fn(g, dim);
    benchmark::DoNotOptimize(s.data_ptr());
  }
}

torch::Tensor ours(const torch::Tensor& g, int64_t dim) {
  return moejet::kernels::sum_fp32(g, dim);
}
torch::Tensor aten(const torch::Tensor& g, int64_t dim) {
  return g.sum(dim, false, torch::kFloat);
}

void BM_SumFp32_Dense_Ours(benchmark::State& s) {
  sum_bf16(s, {6304, 768}, 0, ours);
}
void BM_SumFp32_Dense_Aten(benchmark::State& s) {
  sum_bf16(s, {6304, 768}, 0, aten);
}
void BM_SumFp32_Experts_Ours(benchmark::State& s) {
  sum_bf16(s, {98, 32, 768}, 1, ours);
}
void BM_SumFp32_Experts_Aten(benchmark::State& s) {
  sum_bf16(s, {98, 32, 768}, 1, aten);
}

}  // namespace

BENCHMARK(BM_SumFp32_Dense_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SumFp32_Dense_Aten)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SumFp32_Experts_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SumFp32_Experts_Aten)->Unit(benchmark::kMicrosecond)->UseRealTime();
