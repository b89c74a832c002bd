#include "moejet/train/step_timing.h"

#include <algorithm>
#include <chrono>

#include <torch/torch.h>

#include "moejet/core/stopwatch.h"
#include "moejet/kernels/matmul.h"
#include "moejet/train/trainer.h"

namespace moejet::train {

double median(std::vector<double> values) {
  if (values.empty()) {
    return 0.0;
  }
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

StepTimes StepSamples::median() const {
  auto of = [this](double StepTimes::*field) {
    std::vector<double> v;
    for (const auto& s : steps) {
      v.push_back(s.*field);
    }
    return train::median(std::move(v));
  };
  return {of(&StepTimes::forward), of(&StepTimes::backward), of(&StepTimes::optimizer), of(&StepTimes::total)};
}

std::vector<double> StepSamples::totals() const {
  std::vector<double> v;
  for (const auto& s : steps) {
    v.push_back(s.total);
  }
  return v;
}

TimedTrainStep::TimedTrainStep(std::string name, models::ModelPtr model, torch::Device device,
                               kernels::Precision precision)
    : name_(std::move(name)), model_(std::move(model)), device_(device), precision_(precision) {
  kernels::require_precision(precision_, device_);
  model_->to(device_);
  model_->train();
  for (auto& entry : model_->moe_layer_list) {
    entry.second->collect_stats = false;
  }
  opt_ = make_optimizer(*model_, OptimConfig{});
}

void TimedTrainStep::set_precision(kernels::Precision p) {
  kernels::require_precision(p, device_);
  precision_ = p;
}

void TimedTrainStep::set_batch(int64_t batch) {
  const int64_t size = model_->image_size();
  x_ = torch::randn({batch, model_->in_chans(), size, size}, device_);
  y_ = torch::softmax(torch::randn({batch, model_->num_classes()}, device_), 1);
}

StepTimes TimedTrainStep::step() {
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  auto sync = [this] {
    if (device_.is_cuda()) {
      torch::cuda::synchronize();
    }
  };
  kernels::PrecisionScope scope(precision_);
  const auto t0 = clock::now();
  clear_grads(*opt_.optimizer);
  auto loss = soft_target_cross_entropy(model_->forward(x_), y_);
  if (auto aux = model_->moe_aux_loss(); aux.defined()) {
    loss = loss + aux;
  }
  sync();
  const auto t1 = clock::now();
  loss.backward();
  sync();
  const auto t2 = clock::now();
  opt_.optimizer->step();
  sync();
  loss.item<float>();
  const auto t3 = clock::now();
  return {seconds(t0, t1), seconds(t1, t2), seconds(t2, t3), seconds(t0, t3)};
}

int64_t TimedTrainStep::optimizer_bytes() const {
  // The optimizer's own list: frozen parameters are not in it and cost it nothing.
  int64_t elements = 0;
  for (const auto& group : opt_.optimizer->param_groups()) {
    for (const auto& p : group.params()) {
      elements += p.numel();
    }
  }
  constexpr int64_t kFp32TensorsRead = 4, kFp32TensorsWritten = 3;  // p, g, m, v; p, m, v
  return elements * (kFp32TensorsRead + kFp32TensorsWritten) * 4;
}

double memory_gbps(torch::Device device, int64_t elements, int reps) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({elements}, device), b = torch::randn({elements}, device);
  // The untimed first call touches the pages and starts the threads.
  return 12.0 * static_cast<double>(elements) / median_seconds([&] { a.add_(b); }, reps, device.is_cuda()) / 1e9;
}

double gemm_gflops(torch::Device device, kernels::Precision precision, int64_t n, int reps) {
  torch::NoGradGuard no_grad;
  kernels::require_precision(precision, device);
  kernels::PrecisionScope scope(precision);
  const auto type = precision == kernels::Precision::bf16 ? torch::kBFloat16 : torch::kFloat;
  auto a = torch::randn({n, n}, device).to(type), b = torch::randn({n, n}, device).to(type);
  const double seconds = median_seconds([&] { kernels::matmul(a, b); }, reps, device.is_cuda());
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / seconds / 1e9;
}

json StepReport::to_json() const {
  json j = {{"model", model},
            {"precision", precision},
            {"params", params},
            {"flops", macs_per_image},
            {"step_seconds_median", median.total},
            {"img_per_s", images_per_second()},
            {"ratio_to_first", ratio_to_first},
            {"step_seconds", step_seconds},
            {"forward_seconds_median", median.forward},
            {"backward_seconds_median", median.backward},
            {"optimizer_seconds_median", median.optimizer},
            {"train_gflops_per_s", gflops_per_second()}};
  if (gemm_peak_gflops > 0) {
    j["fraction_of_gemm_peak"] = gflops_per_second() / gemm_peak_gflops;
  }
  j["optimizer_bytes"] = optimizer_bytes;
  if (memory_gbps > 0) {
    j["optimizer_floor_seconds"] = optimizer_floor_seconds();
    j["optimizer_fraction_of_memory_rate"] = optimizer_floor_seconds() / median.optimizer;
  }
  return j;
}

StepReport report_step(TimedTrainStep& step, const StepSamples& samples, double first_seconds, double gemm_peak,
                       double memory_rate) {
  StepReport r;
  r.model = step.name();
  r.precision = kernels::to_string(step.precision());
  r.batch = step.batch();
  r.params = models::count_parameters(step.model());
  r.macs_per_image = models::total_macs(step.model());
  r.median = samples.median();
  r.step_seconds = samples.totals();
  r.ratio_to_first = r.median.total / first_seconds;
  r.gemm_peak_gflops = gemm_peak;
  r.optimizer_bytes = step.optimizer_bytes();
  r.memory_gbps = memory_rate;
  return r;
}

}  // namespace moejet::train
