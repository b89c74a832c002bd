#pragma once
// State dicts: ordered name -> tensor maps with timm's key names, as stored in safetensors and
// PyTorch checkpoints, and loading them into libtorch modules by name. Loading checks every key for
// presence and shape and reports all problems at once ("blocks.3.mlp.fc1.weight: expected
// [1536, 384], got [384, 1536]"), so one run shows everything a conversion got wrong.

#include <map>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>
#include <torch/types.h>

namespace moejet::io {

using StateDict = torch::OrderedDict<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

/// All parameters and buffers of `module` under their registered (timm-style) names, detached.
StateDict module_state_dict(const torch::nn::Module& module);

/// "[d0, d1, ...]": how shapes appear in load reports and error messages.
std::string shape_string(const torch::Tensor& t);

struct LoadOptions {
  /// Keys of the checkpoint that the model lacks are an error when true; reported otherwise.
  bool allow_unexpected = false;
  /// Model keys that the checkpoint lacks are an error when true; reported otherwise.
  bool allow_missing = false;
  /// Keys starting with any of these prefixes are skipped when their shape does not match the
  /// model (e.g. {"head."} to fine-tune on a different number of classes). They count as missing
  /// (left at their initial values) and are listed in the report.
  std::vector<std::string> drop_on_mismatch;
  /// Keys starting with any of these prefixes are skipped whatever their shape (e.g. {"head."}: a
  /// head trained for other classes); listed as dropped.
  std::vector<std::string> drop_always;
};

struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> missing;         ///< in the model, not in the checkpoint
  std::vector<std::string> unexpected;      ///< in the checkpoint, not in the model
  std::vector<std::string> shape_mismatch;  ///< "key: expected [..], got [..]"
  std::vector<std::string> dropped;         ///< mismatched keys dropped by drop_on_mismatch
  std::vector<std::string> dtype_mismatch;  ///< integer data for a float tensor (always an error)
  std::vector<std::string> non_finite;      ///< loaded, but holding NaN or Inf (logged as a warning)
  bool ok() const {
    return missing.empty() && unexpected.empty() && shape_mismatch.empty() && dtype_mismatch.empty();
  }
  std::string summary() const;
};

/// Copies tensors into `module`'s parameters/buffers by name (converting dtype/device to the
/// model's). Throws CheckpointError listing every problem that `options` does not allow; `source`
/// names the checkpoint in messages.
LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state, const LoadOptions& options = {},
                           const std::string& source = "<state dict>");

}  // namespace moejet::io
