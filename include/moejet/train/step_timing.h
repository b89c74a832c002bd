#pragma once
// Timing a training step the way `moejet bench` and the Google Benchmark suites in bench/ both
// report it: one model on a fixed random batch, stepped by the trainer's optimizer (its parameter
// groups and fused AdamW), with forward, backward and optimizer phases timed apart. Models are
// stepped in turn, interleaved, so that machine noise hits each alike; medians of a few steps
// are what gets compared, and the ratio of two medians taken in one run is the figure to quote.

#include <string>
#include <vector>

#include <torch/types.h>

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

/// A model under test: it, its optimizer and a batch. MoE routing statistics are off, as in the
/// trainer's steps that do not log.
class TimedTrainStep {
 public:
  TimedTrainStep(std::string name, models::ModelPtr model, torch::Device device);
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

 private:
  std::string name_;
  models::ModelPtr model_;
  torch::Device device_;
  OptimizerBundle opt_;
  torch::Tensor x_, y_;
};

double median(std::vector<double> values);

}  // namespace moejet::train
