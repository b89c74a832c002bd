// kernels::blas_sgemm called directly, one GEMM per expert on its own thread under
// SingleThreadedBlas, against torch::mm per expert (ATen's dispatch and OpenBLAS's own thread
// split for each small GEMM): the expert GEMMs of V-JetMoE-T at batch 32, 98 products
// [32 x 192] x [192 x 768]. kernels::expert_bmm is built on this; its own benchmark compares it
// with torch::bmm.
//
//   build/bench/moejet_bench --benchmark_filter=Blas

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/blas.h"
#include "moejet/kernels/parallel.h"

namespace {

constexpr int kBlasExperts = 98, kBlasRows = 32, kBlasDim = 192, kBlasHidden = 768;

void BM_Blas_DirectSgemmPerExpert(benchmark::State& state) {
  const auto sgemm = moejet::kernels::blas_sgemm();
  if (sgemm == nullptr) {
    state.SkipWithError("no sgemm_ in this process (a BLAS without the Fortran symbol)");
    return;
  }
  auto a = torch::randn({kBlasExperts, kBlasRows, kBlasDim}), b = torch::randn({kBlasExperts, kBlasDim, kBlasHidden});
  auto c = torch::empty({kBlasExperts, kBlasRows, kBlasHidden});
  const float *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
  float* cp = c.data_ptr<float>();
  const float one = 1, zero = 0;
  for (auto _ : state) {
    moejet::kernels::SingleThreadedBlas guard;
    moejet::kernels::parallel_chunks(kBlasExperts, 1, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        // Row-major C = A B is column-major C^T = B^T A^T.
        sgemm("N", "N", &kBlasHidden, &kBlasRows, &kBlasDim, &one, bp + e * kBlasDim * kBlasHidden, &kBlasHidden,
              ap + e * kBlasRows * kBlasDim, &kBlasDim, &zero, cp + e * kBlasRows * kBlasHidden, &kBlasHidden);
      }
    });
    benchmark::DoNotOptimize(cp);
  }
  moejet::bench::set_gflops(state, 2.0 * kBlasExperts * kBlasRows * kBlasDim * kBlasHidden);
}

void BM_Blas_TorchMmPerExpert(benchmark::State& state) {
  auto a = torch::randn({kBlasExperts, kBlasRows, kBlasDim}), b = torch::randn({kBlasExperts, kBlasDim, kBlasHidden});
  auto c = torch::empty({kBlasExperts, kBlasRows, kBlasHidden});
  for (auto _ : state) {
    for (int64_t e = 0; e < kBlasExperts; ++e) {
      auto ce = c[e];
      torch::mm_out(ce, a[e], b[e]);
    }
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  moejet::bench::set_gflops(state, 2.0 * kBlasExperts * kBlasRows * kBlasDim * kBlasHidden);
}

BENCHMARK(BM_Blas_DirectSgemmPerExpert)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Blas_TorchMmPerExpert)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
