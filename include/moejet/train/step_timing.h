#pragma once
// Timing a training step the way `moejet bench` and the Google Benchmark suites in bench/ both
// report it: one model on a fixed random batch, stepped by the trainer's optimizer (its parameter
// groups and fused AdamW), with forward, backward and optimizer phases timed apart. Models are
// stepped in turn, interleaved, so that machine noise hits each alike; medians of a few steps
// are what gets compared, and the ratio of two medians taken in one run is the figure to quote.

#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/core/json_util.h"
#include "moejet/kernels/precision.h"
#include "moejet/models/classifier.h"
#include "moejet/train/optimizer.h"

namespace moejet::train {

/// Seconds of one step, by phase.
struct StepTimes {
  double forward = 0, backward = 0, optimizer = 0, total = 0;
};

/// The median of each phase over steps.
struct StepSamples {
  std::vector<StepTimes> steps;
  void clear() {
    steps.clear();
  }
  /// Each field's median over the steps (not one step's times).
  StepTimes median() const;
  std::vector<double> totals() const;
};

/// A model under test: it, its optimizer, a batch and the precision of its products. MoE routing
/// statistics are off, as in the trainer's steps that do not log.
class TimedTrainStep {
 public:
  TimedTrainStep(std::string name, models::ModelPtr model, torch::Device device,
                 kernels::Precision precision = kernels::Precision::fp32);
  /// A fixed random batch of this size: images, and soft targets as mixup makes them.
  void set_batch(int64_t batch);
  /// One forward, backward and optimizer step, synchronised on CUDA so that the phases are real.
  StepTimes step();

  const std::string& name() const {
    return name_;
  }
  models::ImageClassifierImpl& model() {
    return *model_;
  }
  int64_t batch() const {
    return x_.defined() ? x_.size(0) : 0;
  }
  kernels::Precision precision() const {
    return precision_;
  }
  void set_precision(kernels::Precision p);
  /// The bytes its AdamW step must move at the least: each trained parameter's value, gradient
  /// and two moments read and its value and moments written, all fp32, so 28 per element. The
  /// fused AdamW also writes the bf16 copies it keeps (kernels/bf16_weights.h); a floor leaves
  /// them out.
  int64_t optimizer_bytes() const;

 private:
  std::string name_;
  models::ModelPtr model_;
  torch::Device device_;
  kernels::Precision precision_;
  OptimizerBundle opt_;
  torch::Tensor x_, y_;
};

double median(std::vector<double> values);

/// What this machine's matrix multiply reaches in `precision`: kernels::matmul (the dispatch the
/// dense layers run through, kernels/matmul.h) on n x n x n matrices already in that precision, as
/// the median of `reps` runs after a warm-up, in GFLOP/s. The yardstick a train step's achieved
/// rate is read against.
double gemm_gflops(torch::Device device, kernels::Precision precision = kernels::Precision::fp32, int64_t n = 2048,
                   int reps = 5);

/// What this machine's memory streams: `a += b` in place on fp32 tensors of `elements` each, far
/// beyond the caches (12 bytes per element: a and b read, a written), as the median of `reps` runs
/// after a warm-up, in GB/s. The optimizer's step does a few flops per byte, so this rate, not the
/// GEMM peak, is what its time is read against: TimedTrainStep::optimizer_bytes() at this rate is
/// the least time any AdamW can step in.
double memory_gbps(torch::Device device, int64_t elements = int64_t{1} << 26, int reps = 5);

/// `optimizer_bytes` at `memory_gbps`: the least time an optimizer moving them can step in (0
/// when the rate was not measured).
inline double optimizer_floor_seconds(int64_t optimizer_bytes, double memory_gbps) {
  return memory_gbps > 0 ? static_cast<double>(optimizer_bytes) / (memory_gbps * 1e9) : 0.0;
}

/// A train step's floating-point operations: 2 per multiply-accumulate, and a backward of twice the
/// forward's, so 6 x the forward MACs of each image (the papers' and timm's counting of MACs).
inline double train_step_flops(double macs_per_image, int64_t batch) {
  return 6.0 * macs_per_image * static_cast<double>(batch);
}

/// One model at one batch size, as `moejet bench` prints and writes it.
struct StepReport {
  std::string model;
  std::string precision = "fp32";
  int64_t batch = 0, params = 0;
  double macs_per_image = 0;  ///< forward multiply-accumulates (fvcore convention)
  StepTimes median;
  std::vector<double> step_seconds;
  double ratio_to_first = 1;
  double gemm_peak_gflops = 0;  ///< gemm_gflops() of the same run; 0 when not measured
  int64_t optimizer_bytes = 0;  ///< TimedTrainStep::optimizer_bytes()
  double memory_gbps = 0;       ///< memory_gbps() of the same run; 0 when not measured

  double images_per_second() const {
    return static_cast<double>(batch) / median.total;
  }
  /// The step's achieved rate, train_step_flops() over its median time.
  double gflops_per_second() const {
    return train_step_flops(macs_per_image, batch) / median.total / 1e9;
  }
  /// train::optimizer_floor_seconds of this step's optimizer at the run's memory rate.
  double optimizer_floor_seconds() const {
    return train::optimizer_floor_seconds(optimizer_bytes, memory_gbps);
  }
  json to_json() const;
};

/// `step`'s report from its samples; `first_seconds` is the first model's median step, `gemm_peak`
/// and `memory_rate` the run's gemm_gflops() and memory_gbps().
StepReport report_step(TimedTrainStep& step, const StepSamples& samples, double first_seconds, double gemm_peak,
                       double memory_rate = 0);

}  // namespace moejet::train
