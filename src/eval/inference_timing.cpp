#include "moejet/eval/inference_timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <torch/torch.h>

namespace moejet::eval {

TimedInference::TimedInference(models::ImageClassifierImpl& model, torch::Device device, kernels::Precision precision)
    : model_(model), device_(device), precision_(precision) {
  kernels::require_precision(precision_, device_);
}

void TimedInference::set_batch(int64_t batch) {
  const int64_t size = model_.image_size();
  x_ = torch::randn({batch, model_.in_chans(), size, size}, device_);
}

double TimedInference::forward() {
  TORCH_CHECK(x_.defined(), "TimedInference: set_batch first");
  model_.eval();
  torch::InferenceMode inference;
  kernels::PrecisionScope scope(precision_);
  const auto t0 = std::chrono::steady_clock::now();
  auto logits = model_.forward(x_);
  if (device_.is_cuda()) {
    torch::cuda::synchronize();
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double quantile(std::vector<double> seconds, double q) {
  TORCH_CHECK(!seconds.empty() && q >= 0 && q <= 1, "quantile: need values and q in [0, 1]");
  std::sort(seconds.begin(), seconds.end());
  const auto rank = static_cast<size_t>(std::max(1.0, std::ceil(q * static_cast<double>(seconds.size()))));
  return seconds[rank - 1];
}

}  // namespace moejet::eval
