#pragma once
// What eval, predict and export start from: a checkpoint's model on a device in eval mode, the
// preprocessing it was trained with (flags over the stored values), both logged, and a Mobile
// V-MoE's super-classes.

#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>
#include <CLI/CLI.hpp>

#include "moejet/data/superclasses.h"
#include "moejet/eval/checkpoint_inputs.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

/// Where the model comes from: the checkpoint, a preset or JSON for a checkpoint without a moejet
/// config ("" = the file's), and --set overrides of the model config.
struct ModelSource {
  std::string checkpoint, model;
  std::vector<std::string> sets;
};

/// The positional CHECKPOINT, -m/--model and --set.
void add_model_source_flags(CLI::App& sub, ModelSource& source);

struct InferenceModel {
  std::string checkpoint;
  models::LoadedModel loaded;
  eval::ResolvedPreprocess pre;
  /// A Mobile V-MoE's super-classes: from `file` when given, else those stored in the checkpoint;
  /// nullopt for a model without a per-image router, or when neither has any.
  std::optional<data::SuperClasses> superclasses(const std::string& file) const;
};

/// --crop-pct, --mean, --std, --interpolation: the stored preprocessing's overrides.
void add_preprocess_flags(CLI::App& sub, eval::PreprocessOverrides& pre);

InferenceModel load_inference_model(const ModelSource& source, const torch::Device& device,
                                    const eval::PreprocessOverrides& overrides);

}  // namespace moejet::cli
