#pragma once
// TorchScript export: a moejet model traced into a torch::jit::Module that loads with
// torch::jit::load in C++ and torch.jit.load in Python, without moejet. The module mirrors the
// model's submodules, so its state_dict keys are moejet's (timm's) names; its `forward` maps
// images [B, C, H, W] to logits [B, K], and a Mobile V-MoE's also has `route`, the router's
// logits [B, E] (its argmax is the expert each image runs). Tracing runs the model's tensor-op
// paths (kernels/tracing.h), and records sizes as constants: the module takes the batch size it
// was traced with.

#include <cstdint>
#include <map>
#include <string>

#include <torch/script.h>

#include "moejet/models/classifier.h"

namespace moejet::models {

/// Traces `model` (put in eval mode; MoE statistics off while tracing) on `example` [B, C, H, W].
torch::jit::Module trace_model(const ModelPtr& model, const torch::Tensor& example);

/// The TorchScript archive of `module` (what torch.jit.save writes), with `extra_files`
/// (name -> contents) inside it, as torch.jit.save's _extra_files.
std::string serialize_torchscript(const torch::jit::Module& module,
                                  const std::map<std::string, std::string>& extra_files = {});

}  // namespace moejet::models
