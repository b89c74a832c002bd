#pragma once
// The backbones moejet builds, in one table. Each architecture has its name (a config's "arch"),
// its timm presets, timm's default preprocessing for them, how its config is read and how its
// model is built. The config reader, make_model, the command line's preset names and a
// checkpoint's default preprocessing look names up here rather than testing them, so a new
// backbone is one entry here and one alternative of ModelConfig::backbone (in the same order).

#include <functional>
#include <string>
#include <vector>

#include "moejet/core/json_util.h"
#include "moejet/models/classifier.h"
#include "moejet/models/model_config.h"

namespace moejet::models {

/// timm's pretrained_cfg defaults of an architecture's presets. One mean/std value stands for
/// every channel; three apply to RGB input only.
struct TimmPreprocessDefaults {
  std::vector<double> mean, std;
  double crop_pct = 0.875;
};

struct Architecture {
  std::string name;                  ///< "arch" in a model config
  std::string display_name;          ///< "ViT", "ConvNeXt"
  std::vector<std::string> presets;  ///< timm variant names this architecture builds
  TimmPreprocessDefaults timm_preprocess;
  /// The strict reader of this architecture's config (`j` may hold "arch" and "preset").
  std::function<ModelConfig(const json& j, const std::string& path)> read;
  std::function<ModelPtr(const ModelConfig&)> build;
};

/// Every architecture, in the order of ModelConfig::backbone's alternatives; the first (ViT) is
/// the one a config without "arch" means.
const std::vector<Architecture>& architectures();
/// By name; a ConfigError at `path` lists the names.
const Architecture& architecture(const std::string& name, const std::string& path = "model.arch");
/// The architecture a config holds.
const Architecture& architecture_of(const ModelConfig& config);
/// The architecture with this timm preset, or null.
const Architecture* architecture_of_preset(const std::string& preset);
/// "ViT: vit_tiny_patch16_224, ...; ConvNeXt: convnext_atto, ..." for messages.
std::string describe_presets();

}  // namespace moejet::models
