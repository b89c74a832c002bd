#include "moejet/core/stopwatch.h"

#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "moejet/core/error.h"

namespace moejet {

double median_seconds(const std::function<void()>& run, int reps, bool cuda) {
  check<Error>(reps >= 1, "median_seconds: reps must be >= 1, got {}", reps);
  auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    if (cuda) {
      torch::cuda::synchronize();
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  once();
  std::vector<double> seconds;
  for (int i = 0; i < reps; ++i) {
    seconds.push_back(once());
  }
  std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace moejet
