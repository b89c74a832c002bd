#include "moejet/models/model_config.h"

#include "moejet/core/error.h"
#include "moejet/models/vit.h"

namespace moejet::models {

void ModelConfig::validate() const {
  check<ConfigError>(arch == "vit" || arch == "convnext", "model.arch: expected \"vit\" or \"convnext\", got \"{}\"",
                     arch);
  if (is_vit()) {
    vit.validate();
  } else {
    convnext.validate();
  }
}

void to_json(json& j, const ModelConfig& c) {
  if (c.is_vit()) {
    j = c.vit;  // no "arch": ViT files stay as they always were
  } else {
    j = c.convnext;
  }
}

ModelConfig model_config_from_json(const json& j, const std::string& path) {
  check<ConfigError>(j.is_object(), "{}: expected an object", path);
  ModelConfig c;
  if (j.contains("arch")) {
    c.arch = j.at("arch").get<std::string>();
  } else if (j.contains("preset") && j.at("preset").is_string() &&
             j.at("preset").get<std::string>().rfind("convnext", 0) == 0) {
    c.arch = "convnext";
  }
  if (c.arch == "convnext") {
    c.convnext = convnext_config_from_json(j, path);
  } else {
    check<ConfigError>(c.arch == "vit", "{}.arch: expected \"vit\" or \"convnext\", got \"{}\"", path, c.arch);
    json rest = j;
    rest.erase("arch");
    c.vit = vit_config_from_json(rest, path);
  }
  return c;
}

ModelPtr make_model(const ModelConfig& config) {
  if (config.is_vit()) {
    return std::make_shared<VisionTransformerImpl>(config.vit);
  }
  return std::make_shared<ConvNextImpl>(config.convnext);
}

}  // namespace moejet::models
