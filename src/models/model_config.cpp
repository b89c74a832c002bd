#include "moejet/models/model_config.h"

#include "moejet/core/error.h"
#include "moejet/models/architectures.h"

namespace moejet::models {

const std::string& ModelConfig::arch() const {
  return architecture_of(*this).name;
}

void ModelConfig::check_is(bool holds, const ModelConfig& wanted) const {
  check<ConfigError>(holds, "the model is a {}, not a {}", architecture_of(*this).display_name,
                     architecture_of(wanted).display_name);
}

void to_json(json& j, const ModelConfig& c) {
  // ViT files have no "arch" (they never had one); the other architectures write their own.
  std::visit([&j](const auto& backbone) { j = backbone; }, c.backbone);
}

ModelConfig model_config_from_json(const json& j, const std::string& path) {
  check<ConfigError>(j.is_object(), "{}: expected an object", path);
  const Architecture* arch = &architectures().front();
  if (j.contains("arch")) {
    arch = &architecture(j.at("arch").get<std::string>(), path + ".arch");
  } else if (j.contains("preset") && j.at("preset").is_string()) {
    const auto preset = j.at("preset").get<std::string>();
    arch = architecture_of_preset(preset);
    check<ConfigError>(arch != nullptr, "{}.preset: unknown model preset '{}' ({})", path, preset, describe_presets());
  }
  return arch->read(j, path);
}

ModelPtr make_model(const ModelConfig& config) {
  return architecture_of(config).build(config);
}

}  // namespace moejet::models
