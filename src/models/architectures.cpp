#include "moejet/models/architectures.h"

#include <algorithm>

#include "moejet/core/error.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit.h"

namespace moejet::models {

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = {
      {"vit",
       "ViT",
       vit_preset_names(),
       // timm's vision_transformer _cfg: IMAGENET_INCEPTION_MEAN / STD, crop_pct 0.9.
       {{0.5}, {0.5}, 0.9},
       [](const json& j, const std::string& path) {
         json rest = j;
         rest.erase("arch");  // the ViT reader predates "arch": its files never had one
         return ModelConfig(vit_config_from_json(rest, path));
       },
       [](const ModelConfig& c) -> ModelPtr {
         return std::make_shared<VisionTransformerImpl>(*c.get_if<VitConfig>());
       }},
      {"convnext",
       "ConvNeXt",
       convnext_preset_names(),
       // timm's convnext _cfg: IMAGENET_DEFAULT_MEAN / STD, crop_pct 0.875.
       {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}, 0.875},
       [](const json& j, const std::string& path) { return ModelConfig(convnext_config_from_json(j, path)); },
       [](const ModelConfig& c) -> ModelPtr { return std::make_shared<ConvNextImpl>(*c.get_if<ConvNextConfig>()); }},
  };
  return table;
}

const Architecture& architecture(const std::string& name, const std::string& path) {
  for (const auto& a : architectures()) {
    if (a.name == name) {
      return a;
    }
  }
  std::vector<std::string> names;
  for (const auto& a : architectures()) {
    names.push_back(fmt::format("\"{}\"", a.name));
  }
  throw ConfigError(fmt::format("{}: expected {}, got \"{}\"", path, fmt::join(names, " or "), name));
}

const Architecture& architecture_of(const ModelConfig& config) {
  return architectures().at(config.backbone.index());
}

const Architecture* architecture_of_preset(const std::string& preset) {
  for (const auto& a : architectures()) {
    if (std::find(a.presets.begin(), a.presets.end(), preset) != a.presets.end()) {
      return &a;
    }
  }
  return nullptr;
}

std::string describe_presets() {
  std::vector<std::string> parts;
  for (const auto& a : architectures()) {
    parts.push_back(fmt::format("{}: {}", a.display_name, fmt::join(a.presets, ", ")));
  }
  return fmt::format("{}", fmt::join(parts, "; "));
}

}  // namespace moejet::models
