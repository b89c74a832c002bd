// One expert MLP layer's train step (forward and backward) on V-JetMoE-T's core-expert shapes at
// batch 32: 98 experts, one slot per image each, so [98, 32, 192] -> 768 -> 192, expert dropout
// 0.4 as its config, in fp32 and in bf16 (fp32 master weights, bf16 products; the hidden layer
// stays bf16 between fc1, GELU, dropout and fc2).
//
//   build/bench/moejet_bench --benchmark_filter=ExpertMlp

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/precision.h"
#include "moejet/moe/expert_mlp.h"

namespace {

void expert_mlp_step(benchmark::State& state, moejet::kernels::Precision precision) {
  torch::manual_seed(0);
  constexpr int64_t kExperts = 98, kRows = 32, kDim = 192, kHidden = 768;
  moejet::moe::ExpertMlp experts(kExperts, kDim, kHidden, 0.4, "trunc_normal");
  experts->train();
  auto x = torch::randn({kExperts, kRows, kDim}).requires_grad_();
  const auto g = torch::randn({kExperts, kRows, kDim});
  moejet::kernels::PrecisionScope scope(precision);
  for (auto _ : state) {
    // Gradients set to none, as the trainer does: zeroed ones would add a pass over each.
    x.mutable_grad() = torch::Tensor();
    for (auto& p : experts->parameters()) {
      p.mutable_grad() = torch::Tensor();
    }
    experts->forward(x).backward(g);
    benchmark::DoNotOptimize(x.grad().data_ptr());
  }
  // Two products forward, four backward.
  moejet::bench::set_gflops(state, 6.0 * 2.0 * kExperts * kRows * kDim * kHidden);
}

void BM_ExpertMlp_TrainStep_Fp32(benchmark::State& s) {
  expert_mlp_step(s, moejet::kernels::Precision::fp32);
}
void BM_ExpertMlp_TrainStep_Bf16(benchmark::State& s) {
  expert_mlp_step(s, moejet::kernels::Precision::bf16);
}
BENCHMARK(BM_ExpertMlp_TrainStep_Fp32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ExpertMlp_TrainStep_Bf16)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
