#pragma once
// Timing one operation the way moejet's yardsticks do (the GEMM peak and memory rate of `moejet
// bench`, each product of `bench --floor` timed alone): one call first, untimed, for thread pools,
// page faults, caches and kernel set-up; then the median of several timed calls, each waited for
// on CUDA so that the time is the work's and not its launch's. A median, because a shared machine's
// outliers are one-sided.

#include <functional>

namespace moejet {

/// The median seconds of `reps` calls of `run` (>= 1) after one untimed call; with `cuda`, each
/// call ends with torch::cuda::synchronize().
double median_seconds(const std::function<void()>& run, int reps, bool cuda);

}  // namespace moejet
