// kernels::layer_norm against torch::layer_norm, forward and backward, on a ViT-T block's tokens
// at batch 32 ([6304, 192]): fp32 in and out, and (ours) bf16 out with a bf16 output gradient, as
// under bf16 products where the norm feeds qkv or fc1; torch's then pays the casts.
//
//   build/bench/moejet_bench --benchmark_filter=LayerNorm

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/layer_norm.h"
#include "moejet/kernels/precision.h"

namespace {

template <class Fn>
void layer_norm_step(benchmark::State& state, bool bf16, const Fn& fn) {
  torch::manual_seed(0);
  auto x = torch::randn({6304, 192}).requires_grad_();
  auto w = torch::randn({192}).requires_grad_(), b = torch::randn({192}).requires_grad_();
  const auto g = torch::randn({6304, 192}).to(bf16 ? torch::kBFloat16 : torch::kFloat);
  moejet::kernels::PrecisionScope scope(bf16 ? moejet::kernels::Precision::bf16 : moejet::kernels::Precision::fp32);
  for (auto _ : state) {
    for (auto* t : {&x, &w, &b}) {
      t->mutable_grad() = torch::Tensor();
    }
    fn(x, w, b).backward(g);
    benchmark::DoNotOptimize(x.grad().data_ptr());
  }
}

using moejet::kernels::ProductOut;

void BM_LayerNorm_Fp32_Ours(benchmark::State& s) {
  layer_norm_step(
      s, false, [](const auto& x, const auto& w, const auto& b) { return moejet::kernels::layer_norm(x, w, b, 1e-6); });
}
void BM_LayerNorm_Fp32_Torch(benchmark::State& s) {
  layer_norm_step(s, false,
                  [](const auto& x, const auto& w, const auto& b) { return torch::layer_norm(x, {192}, w, b, 1e-6); });
}
void BM_LayerNorm_Bf16Out_Ours(benchmark::State& s) {
  layer_norm_step(s, true, [](const auto& x, const auto& w, const auto& b) {
    return moejet::kernels::layer_norm(x, w, b, 1e-6, ProductOut::compute);
  });
}
void BM_LayerNorm_Bf16Out_TorchAndCast(benchmark::State& s) {
  layer_norm_step(s, true, [](const auto& x, const auto& w, const auto& b) {
    return moejet::kernels::to_bf16(torch::layer_norm(x, {192}, w, b, 1e-6));
  });
}
BENCHMARK(BM_LayerNorm_Fp32_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerNorm_Fp32_Torch)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerNorm_Bf16Out_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerNorm_Bf16Out_TorchAndCast)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
