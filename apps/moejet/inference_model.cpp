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

InferenceModel load_inference_model(const std::string& checkpoint, const std::string& model_spec,
                                    const std::vector<std::string>& sets, const torch::Device& device,
                                    const eval::PreprocessOverrides& overrides) {
  InferenceModel m{models::load_model(checkpoint, model_spec.empty() ? json() : load_model_json(model_spec),
                                      [&](json& j) { apply_overrides(j, sets); }),
                   {}};
  spdlog::info("load {}: {}", checkpoint, m.loaded.load_summary);
  m.loaded.model->to(device);
  m.loaded.model->eval();
  // Preprocessing: the checkpoint's own unless flags say otherwise; the log says which.
  const std::string preset =
      model_spec.empty() || file_exists(model_spec) ? m.loaded.config_json.value("preset", std::string()) : model_spec;
  m.pre = eval::resolve_preprocess(m.loaded.metadata, checkpoint, preset, m.loaded.config, overrides);
  spdlog::info("preprocessing ({}): {}", m.pre.source, data::describe(m.pre.preprocess));
  return m;
}

}  // namespace moejet::cli
