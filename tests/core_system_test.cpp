#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/blas_runtime.h"
#include "moejet/core/system.h"

namespace {

TEST(System, ComputeThreadsSetOpenBlasThreadsToo) {
  // Two `--threads 1` trainings side by side on two cores (performance.md) must not each put two
  // OpenBLAS threads on their fp32 GEMMs, as an OpenBLAS still on its load-time pool would.
  if (moejet::openblas_num_threads() < 0) {
    GTEST_SKIP() << "BLAS here: " << moejet::system_info().blas;
  }
  const int torch_before = torch::get_num_threads();
  const int blas_before = moejet::openblas_num_threads();
  for (int n : {1, 3}) {
    EXPECT_EQ(moejet::set_compute_threads(n), n);
    EXPECT_EQ(torch::get_num_threads(), n);
    EXPECT_EQ(moejet::openblas_num_threads(), n);
    const auto info = moejet::system_info();
    EXPECT_EQ(info.blas_threads, n);
    EXPECT_NE(info.summary().find("BLAS threads " + std::to_string(n)), std::string::npos) << info.summary();
  }
  torch::set_num_threads(torch_before);
  moejet::openblas_set_num_threads_fn()(blas_before);
}

}  // namespace
