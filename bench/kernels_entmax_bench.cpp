// kernels::entmax15 (sort-free row kernel) against its tensor-op form (sort, cumsum, gather) on
// SpheroMoE's combine logits of V-JetMoE-T at batch 32: [32, 196, 294] along the slots. Forward
// only, as the two share their backward.
//
//   build/bench/moejet_bench --benchmark_filter=Entmax

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/entmax.h"

namespace {

void run_entmax(benchmark::State& state, bool row_kernel) {
  torch::manual_seed(0);
  auto x = torch::randn({32, 196, 294}) * 3;
  for (auto _ : state) {
    auto y = row_kernel ? moejet::kernels::entmax15(x) : moejet::kernels::entmax15_generic(x);
    benchmark::DoNotOptimize(y.data_ptr<float>());
  }
  moejet::bench::set_bandwidth(state, 2 * x.numel() * static_cast<int64_t>(sizeof(float)));
}

void BM_Entmax15_RowKernel(benchmark::State& s) {
  run_entmax(s, true);
}
void BM_Entmax15_TensorOps(benchmark::State& s) {
  run_entmax(s, false);
}
BENCHMARK(BM_Entmax15_RowKernel)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Entmax15_TensorOps)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
