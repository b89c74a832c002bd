#pragma once
// What eval, predict and export start from: a checkpoint's model on a device in eval mode, and the
// preprocessing it was trained with (flags over the stored values), both logged.

#include <string>
#include <vector>

#include <torch/types.h>
#include <CLI/CLI.hpp>

#include "moejet/eval/checkpoint_inputs.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

struct InferenceModel {
  models::LoadedModel loaded;
  eval::ResolvedPreprocess pre;
};

/// --crop-pct, --mean, --std, --interpolation: the stored preprocessing's overrides.
void add_preprocess_flags(CLI::App& sub, eval::PreprocessOverrides& pre);

/// `model_spec`: a preset or JSON for a checkpoint without a moejet config ("" = the file's);
/// `sets`: --set overrides of the model config.
InferenceModel load_inference_model(const std::string& checkpoint, const std::string& model_spec,
                                    const std::vector<std::string>& sets, const torch::Device& device,
                                    const eval::PreprocessOverrides& overrides);

}  // namespace moejet::cli
