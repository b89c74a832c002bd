#pragma once
// Timing inference the way `moejet bench --infer` reports it: a model in eval mode, under
// torch::InferenceMode, on a fixed random batch, in a precision (kernels/precision.h). Latency is
// read at batch 1 as percentiles of single forwards (what an on-device user waits for; Mobile
// V-MoE's claim is about it), throughput at a large batch as images per second of the median.
// Callers interleave models forward by forward, so that machine noise hits each alike.

#include <vector>

#include <torch/types.h>

#include "moejet/kernels/precision.h"
#include "moejet/models/classifier.h"

namespace moejet::eval {

class TimedInference {
 public:
  TimedInference(models::ImageClassifierImpl& model, torch::Device device, kernels::Precision precision);
  /// A fixed random batch of this size.
  void set_batch(int64_t batch);
  /// Seconds of one forward of the batch (synchronised on CUDA).
  double forward();

 private:
  models::ImageClassifierImpl& model_;
  torch::Device device_;
  kernels::Precision precision_;
  torch::Tensor x_;
};

/// The q-quantile (0..1) of `seconds` by the nearest-rank method (p50 of 1 2 3 4 is 2).
double quantile(std::vector<double> seconds, double q);

}  // namespace moejet::eval
