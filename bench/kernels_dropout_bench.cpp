// kernels::fused_dropout (counter-based mask, one pass, byte mask kept) against torch::dropout,
// forward and backward, on the hidden activations of V-JetMoE-T's core experts at batch 32
// ([98, 32, 768]) at the authors' expert dropout, p = 0.4.
//
//   build/bench/moejet_bench --benchmark_filter=Dropout

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/dropout.h"

namespace {

void run_dropout(benchmark::State& state, bool fused) {
  torch::manual_seed(0);
  auto x = torch::randn({98, 32, 768}).requires_grad_();
  for (auto _ : state) {
    x.mutable_grad() = torch::Tensor();
    auto y = fused ? moejet::kernels::fused_dropout(x, 0.4) : torch::dropout(x, 0.4, true);
    y.sum().backward();
    benchmark::DoNotOptimize(x.grad().data_ptr<float>());
  }
  moejet::bench::set_bandwidth(state, 4 * x.numel() * static_cast<int64_t>(sizeof(float)));
}

void BM_Dropout_Fused(benchmark::State& s) {
  run_dropout(s, true);
}
void BM_Dropout_Torch(benchmark::State& s) {
  run_dropout(s, false);
}
BENCHMARK(BM_Dropout_Fused)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Dropout_Torch)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
