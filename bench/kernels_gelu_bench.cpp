// kernels::gelu against torch::gelu, forward and backward, on ViT-T's MLP hidden layer at batch 32
// ([6304, 768]), fp32 and bf16.
//
//   build/bench/moejet_bench --benchmark_filter=Gelu

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/gelu.h"

namespace {

template <class Fn>
void gelu_forward_backward(benchmark::State& state, torch::ScalarType type, const Fn& fn) {
  torch::manual_seed(0);
  auto x = torch::randn({6304, 768}).to(type).requires_grad_();
  const auto g = torch::randn({6304, 768}).to(type);
  for (auto _ : state) {
    x.mutable_grad() = torch::Tensor();
    fn(x).backward(g);
    benchmark::DoNotOptimize(x.grad().data_ptr());
  }
  // Forward: read x, write y and what the backward keeps; backward: read g and that, write dx.
  moejet::bench::set_bandwidth(state, 6 * x.numel() * static_cast<int64_t>(x.element_size()));
}

void BM_Gelu_Fp32_Ours(benchmark::State& s) {
  gelu_forward_backward(s, torch::kFloat, [](const torch::Tensor& x) { return moejet::kernels::gelu(x); });
}
void BM_Gelu_Fp32_Torch(benchmark::State& s) {
  gelu_forward_backward(s, torch::kFloat, [](const torch::Tensor& x) { return torch::gelu(x); });
}
void BM_Gelu_Bf16_Ours(benchmark::State& s) {
  gelu_forward_backward(s, torch::kBFloat16, [](const torch::Tensor& x) { return moejet::kernels::gelu(x); });
}
void BM_Gelu_Bf16_Torch(benchmark::State& s) {
  gelu_forward_backward(s, torch::kBFloat16, [](const torch::Tensor& x) { return torch::gelu(x); });
}

BENCHMARK(BM_Gelu_Fp32_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gelu_Fp32_Torch)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gelu_Bf16_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gelu_Bf16_Torch)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
