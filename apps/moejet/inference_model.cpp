#include "inference_model.h"

#include <spdlog/spdlog.h>

#include "commands.h"
#include "moejet/core/fs.h"

namespace moejet::cli {

void add_preprocess_flags(CLI::App& sub, eval::PreprocessOverrides& pre) {
  sub.add_option("--crop-pct", pre.crop_pct,
                 "eval resize = img_size / crop_pct, then centre crop (default: the checkpoint's)")
      ->check(CLI::Range(0.01, 1.0));
  sub.add_option("--mean", pre.mean, "normalisation mean, per channel (default: the checkpoint's)");
  sub.add_option("--std", pre.std, "normalisation std, per channel (default: the checkpoint's)");
  sub.add_option("--interpolation", pre.interpolation, "resize interpolation (default: the checkpoint's)")
      ->check(CLI::IsMember({"bilinear", "bicubic", "nearest"}));
}

void add_model_source_flags(CLI::App& sub, ModelSource& source) {
  sub.add_option("checkpoint", source.checkpoint, "model weights (.safetensors or torch .pth)")
      ->required()
      ->check(CLI::ExistingFile);
  sub.add_option("-m,--model", source.model,
                 "model preset or JSON (needed when the checkpoint carries no moejet config)");
  sub.add_option("--set", source.sets, "override a model config value, e.g. --set num_classes=10");
}

std::optional<data::SuperClasses> InferenceModel::superclasses(const std::string& file) const {
  if (!loaded.model->router) {
    return std::nullopt;
  }
  const auto& cfg = loaded.config;
  return eval::resolve_superclasses(loaded.metadata, checkpoint, file, cfg.num_classes(),
                                    cfg.moe().get<moe::PerImageMoeOptions>().num_experts);
}

InferenceModel load_inference_model(const ModelSource& source, const torch::Device& device,
                                    const eval::PreprocessOverrides& overrides) {
  const auto& spec = source.model;
  InferenceModel m{source.checkpoint,
                   models::load_model(source.checkpoint, spec.empty() ? json() : load_model_json(spec),
                                      [&](json& j) { apply_overrides(j, source.sets); }),
                   {}};
  spdlog::info("load {}: {}", source.checkpoint, m.loaded.load_summary);
  m.loaded.model->to(device);
  m.loaded.model->eval();
  // Preprocessing: the checkpoint's own unless flags say otherwise; the log says which.
  const std::string preset =
      spec.empty() || file_exists(spec) ? m.loaded.config_json.value("preset", std::string()) : spec;
  m.pre = eval::resolve_preprocess(m.loaded.metadata, source.checkpoint, preset, m.loaded.config, overrides);
  spdlog::info("preprocessing ({}): {}", m.pre.source, data::describe(m.pre.preprocess));
  return m;
}

}  // namespace moejet::cli
