#pragma once
// The "model" section of a config or checkpoint, for any backbone: a ViT config (the default, no
// "arch" key, as every earlier moejet file) or a ConvNeXt config ("arch": "convnext", or a
// convnext_* preset). make_model builds the module behind the common ImageClassifier face, so
// train, eval, recycle, info and bench take either backbone from the same JSON.

#include <string>

#include "moejet/core/json_util.h"
#include "moejet/models/classifier.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit_config.h"

namespace moejet::models {

struct ModelConfig {
  std::string arch = "vit";  ///< "vit" or "convnext"
  VitConfig vit;
  ConvNextConfig convnext;

  bool is_vit() const {
    return arch == "vit";
  }
  const moe::MoeConfig& moe() const {
    return is_vit() ? vit.moe : convnext.moe;
  }
  int64_t num_classes() const {
    return is_vit() ? vit.num_classes : convnext.num_classes;
  }
  int64_t in_chans() const {
    return is_vit() ? vit.in_chans : convnext.in_chans;
  }
  int64_t img_size() const {
    return is_vit() ? vit.img_size : convnext.img_size;
  }
  void validate() const;
};

void to_json(json& j, const ModelConfig& c);
/// Dispatches on "arch" (or a convnext_* "preset") to the backbone's strict parser.
ModelConfig model_config_from_json(const json& j, const std::string& path = "model");
/// The same, as a field of a larger config (core/config_fields.h).
inline void read_json(const json& j, ModelConfig& c, const std::string& path) {
  c = model_config_from_json(j, path);
}

ModelPtr make_model(const ModelConfig& config);

}  // namespace moejet::models
