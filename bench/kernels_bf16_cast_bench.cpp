// kernels::sum_fp32 against ATen's sum with an fp32 dtype, on bf16 bias gradients: a ViT-T fc1
// output gradient at batch 32 ([6304, 768], one slice, the rows split over the threads) and
// V-JetMoE-T's expert fc1 output gradient ([98, 32, 768], one expert a thread). And the fp32 ->
// bf16 conversion itself (kernels::to_bf16 against ATen's), on a ViT-T fc1 activation.
//
//   build/bench/moejet_bench --benchmark_filter='SumFp32|ToBf16'

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

template <class Fn>
void convert(benchmark::State& state, const Fn& fn, bool half_zeros = false) {
  torch::manual_seed(0);
  auto x = torch::randn({6304, 768});
  if (half_zeros) {  // a dropout's output: exact zeros must not take the slow lanes' path
    x.mul_(torch::rand({6304, 768}).ge(0.5));
  }
  for (auto _ : state) {
    auto y = fn(x);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 6);
}
void BM_ToBf16_Ours(benchmark::State& s) {
  convert(s, [](const torch::Tensor& x) { return moejet::kernels::to_bf16(x); });
}
void BM_ToBf16_Aten(benchmark::State& s) {
  convert(s, [](const torch::Tensor& x) { return x.to(torch::kBFloat16); });
}
void BM_ToBf16_HalfZeros_Ours(benchmark::State& s) {
  convert(
      s, [](const torch::Tensor& x) { return moejet::kernels::to_bf16(x); }, true);
}

}  // namespace

BENCHMARK(BM_SumFp32_Dense_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SumFp32_Dense_Aten)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SumFp32_Experts_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SumFp32_Experts_Aten)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_ToBf16_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_ToBf16_Aten)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_ToBf16_HalfZeros_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
