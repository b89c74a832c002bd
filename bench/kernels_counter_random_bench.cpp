// kernels::counter_normal (counter-based Box-Muller, split over the cores) against torch::randn
// (libtorch 1.13's serial generator) for SpheroMoE's logit noise at V-JetMoE-T batch 32:
// [32, 196, 294] normal draws.
//
//   build/bench/moejet_bench --benchmark_filter=CounterNormal

#include <torch/torch.h>

#include <vector>

#include "bench_util.h"
#include "moejet/kernels/counter_random.h"
#include "moejet/kernels/parallel.h"

namespace {

constexpr int64_t kCount = int64_t{32} * 196 * 294;

void BM_CounterNormal_Ours(benchmark::State& state) {
  std::vector<float> out(kCount);
  const uint64_t key = 0x1234;
  for (auto _ : state) {
    // As SpheroMoE draws it: any split over threads gives the same values.
    moejet::kernels::parallel_chunks(kCount, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
      moejet::kernels::counter_normal(out.data() + begin, end - begin, static_cast<uint64_t>(begin), key, 1.0f);
    });
    benchmark::DoNotOptimize(out.data());
  }
  moejet::bench::set_bandwidth(state, kCount * static_cast<int64_t>(sizeof(float)));
}

void BM_CounterNormal_TorchRandn(benchmark::State& state) {
  torch::manual_seed(0);
  for (auto _ : state) {
    auto z = torch::randn({kCount});
    benchmark::DoNotOptimize(z.data_ptr<float>());
  }
  moejet::bench::set_bandwidth(state, kCount * static_cast<int64_t>(sizeof(float)));
}

BENCHMARK(BM_CounterNormal_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CounterNormal_TorchRandn)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
