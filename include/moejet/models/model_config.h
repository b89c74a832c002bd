#pragma once
// The "model" section of a config or checkpoint, for any backbone: one architecture's own config,
// a ViT's by default (no "arch" key, as every earlier moejet file) or a ConvNeXt's ("arch":
// "convnext", or a convnext_* preset). Which architectures exist, their presets, and how each is
// read and built are in the registry (models/architectures.h); the accessors here reach the
// fields every backbone config has without asking which one it is.

#include <string>
#include <variant>

#include "moejet/core/json_util.h"
#include "moejet/models/classifier.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit_config.h"

namespace moejet::models {

struct ModelConfig {
  /// One alternative per architecture, in the order of architectures().
  std::variant<VitConfig, ConvNextConfig> backbone;

  ModelConfig() = default;
  ModelConfig(VitConfig c) : backbone(std::move(c)) {}       // NOLINT: a ViT config is a model config
  ModelConfig(ConvNextConfig c) : backbone(std::move(c)) {}  // NOLINT

  /// The architecture's registry name ("vit", "convnext").
  const std::string& arch() const;
  /// This architecture's config, or null when the model is another.
  template <class C>
  const C* get_if() const {
    return std::get_if<C>(&backbone);
  }
  template <class C>
  C* get_if() {
    return std::get_if<C>(&backbone);
  }
  /// This architecture's config; a ConfigError naming both architectures when it is another.
  template <class C>
  C& as() {
    check_is(std::holds_alternative<C>(backbone), C{});
    return std::get<C>(backbone);
  }

  const moe::MoeConfig& moe() const {
    return std::visit([](const auto& c) -> const moe::MoeConfig& { return c.moe; }, backbone);
  }
  int64_t num_classes() const {
    return std::visit([](const auto& c) { return c.num_classes; }, backbone);
  }
  int64_t in_chans() const {
    return std::visit([](const auto& c) { return c.in_chans; }, backbone);
  }
  int64_t img_size() const {
    return std::visit([](const auto& c) { return c.img_size; }, backbone);
  }
  void validate() const {
    std::visit([](const auto& c) { c.validate(); }, backbone);
  }

 private:
  void check_is(bool holds, const ModelConfig& wanted) const;
};

void to_json(json& j, const ModelConfig& c);
/// Reads "arch" (or finds a preset's architecture) and hands the rest to that architecture's strict
/// reader.
ModelConfig model_config_from_json(const json& j, const std::string& path = "model");
/// The same, as a field of a larger config (core/config_fields.h).
inline void read_json(const json& j, ModelConfig& c, const std::string& path) {
  c = model_config_from_json(j, path);
}

ModelPtr make_model(const ModelConfig& config);

}  // namespace moejet::models
