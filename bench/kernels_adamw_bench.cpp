// kernels::adamw_update (one vectorised pass: decay, both moments, update) against the same step in
// torch ops, op for op as torch::optim::AdamW (about ten passes over parameter-sized buffers), on
// a 4 M-element parameter, about a core expert bank of one V-JetMoE-T block. Memory-bound: the
// fused pass moves 5 floats per element (read p, g, m, v; write p, m, v, where p/m/v are in place).
//
//   build/bench/moejet_bench --benchmark_filter=AdamW

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/adamw.h"
#include "moejet/kernels/parallel.h"

namespace {

constexpr int64_t kSize = int64_t{4} << 20;
constexpr double kLr = 1e-3, kWd = 0.05, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;

void BM_AdamW_FusedKernel(benchmark::State& state) {
  auto p = torch::randn({kSize}), g = torch::randn({kSize}), m = torch::zeros({kSize}), v = torch::zeros({kSize});
  moejet::kernels::AdamWCoefficients c{};
  c.decay = static_cast<float>(1 - kLr * kWd);
  c.beta1 = kBeta1;
  c.beta2 = kBeta2;
  c.one_minus_beta1 = static_cast<float>(1 - kBeta1);
  c.one_minus_beta2 = static_cast<float>(1 - kBeta2);
  c.inv_sqrt_bias_correction2 = static_cast<float>(1 / std::sqrt(1 - kBeta2));
  c.eps = kEps;
  c.step_size = static_cast<float>(kLr / (1 - kBeta1));
  float *pp = p.data_ptr<float>(), *mp = m.data_ptr<float>(), *vp = v.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  for (auto _ : state) {
    moejet::kernels::parallel_chunks(kSize, int64_t{1} << 18, [&](int64_t begin, int64_t end) {
      moejet::kernels::adamw_update(pp, gp, mp, vp, begin, end, c);
    });
    benchmark::DoNotOptimize(pp);
  }
  moejet::bench::set_bandwidth(state, 7 * kSize * static_cast<int64_t>(sizeof(float)));
}

void BM_AdamW_TorchOps(benchmark::State& state) {
  auto p = torch::randn({kSize}), g = torch::randn({kSize}), m = torch::zeros({kSize}), v = torch::zeros({kSize});
  const double bc2 = 1 - kBeta2, step_size = kLr / (1 - kBeta1);
  for (auto _ : state) {
    p.mul_(1 - kLr * kWd);
    m.mul_(kBeta1).add_(g, 1 - kBeta1);
    v.mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
    auto denom = (v.sqrt() / std::sqrt(bc2)).add_(kEps);
    p.addcdiv_(m, denom, -step_size);
    benchmark::DoNotOptimize(p.data_ptr<float>());
  }
  moejet::bench::set_bandwidth(state, 7 * kSize * static_cast<int64_t>(sizeof(float)));
}

BENCHMARK(BM_AdamW_FusedKernel)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AdamW_TorchOps)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
