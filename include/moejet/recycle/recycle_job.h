#pragma once
// The whole of `moejet recycle` with its inputs resolved: load each dense source into its model
// (its own config from the file, or the one named), gather the activation statistics the method
// needs on a class-stratified sample of the fine-tuning images, build the MoE's experts
// (recycle_model), and write the initial weights, with the dense model's preprocessing and data
// carried along, and a JSON report beside them.

#include <map>
#include <string>

#include <torch/types.h>

#include "moejet/core/json_util.h"
#include "moejet/core/progress.h"
#include "moejet/data/augment_config.h"
#include "moejet/data/data_config.h"
#include "moejet/recycle/recycle.h"

namespace moejet::recycle {

/// A dense checkpoint and the architecture of its weights: null `model` = the config it stores
/// (for the dense source, failing that: the target without its MoE blocks).
struct SourceSpec {
  std::string path;
  json model;
};

/// The images the activation statistics are gathered on.
struct StatsData {
  data::DataConfig data;   ///< as the fine-tuning config's (range, classes, limit apply)
  uint64_t data_seed = 0;  ///< the fine-tuning config's seed (it picks train_limit's subset)
  std::string split = "train";
  int64_t images = 38400;             ///< at most this many (the authors: 38400)
  std::string sample = "stratified";  ///< "stratified" (every class) or "first" (data-set order)
  data::AugmentConfig transform;      ///< its eval transform (a teacher's own mean, std, crop)
  int64_t batch_size = 128;
  int workers = 2;
  double firing_quantile = 0.0;  ///< see StatsOptions::quantile
};

struct RecycleJob {
  json model;  ///< the MoE model's config
  SourceSpec dense;
  std::map<std::string, SourceSpec> groups;  ///< expert group -> its own source (--source)
  RecycleOptions options;
  StatsData stats;
  std::string out;     ///< the initial weights (.safetensors)
  std::string report;  ///< the JSON report; empty: OUT's stem + .recycle.json
  torch::Device device = torch::kCPU;
  ProgressReporter* progress = nullptr;  ///< the statistics pass reports here (null: nowhere)
};

/// Runs the job and returns its report (also written to job.report or its default).
json run_recycle_job(const RecycleJob& job);

}  // namespace moejet::recycle
