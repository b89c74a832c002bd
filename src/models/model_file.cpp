#include "moejet/models/model_file.h"

#include "moejet/core/error.h"
#include "moejet/models/checkpoint_layout.h"

namespace moejet::models {

json model_config_from_metadata(const io::Metadata& metadata, const std::string& source) {
  if (auto v = metadata.find(kFormatVersionKey); v != metadata.end()) {
    check<CheckpointError>(v->second == kFormatVersion,
                           "{}: moejet format version \"{}\"; this moejet reads version {} (was the file written by a "
                           "newer moejet?)",
                           source, v->second, kFormatVersion);
  }
  auto it = metadata.find(kModelConfigKey);
  if (it == metadata.end()) {
    return json();
  }
  try {
    return parse_json(it->second, fmt::format("{}: metadata '{}'", source, kModelConfigKey));
  } catch (const ConfigError& e) {
    throw CheckpointError(e.what());
  }
}

std::string load_model_weights(ImageClassifierImpl& model, const std::string& path, bool drop_head) {
  return load_model_weights(model, io::read_checkpoint(path), path, drop_head);
}

std::string load_model_weights(ImageClassifierImpl& model, io::StateDict state, const std::string& source,
                               bool drop_head, const std::vector<std::string>& drop_always) {
  std::vector<std::string> notes;
  state = to_moejet_layout(state, &notes);
  state = model.adapt_checkpoint(state, &notes);
  io::LoadOptions opts;
  if (drop_head) {
    opts.drop_on_mismatch = {"head."};
  }
  opts.drop_always = drop_always;
  // A dense checkpoint for an MoE model: its MoE blocks still hold a dense MLP (fc1), which only
  // checkpoint recycling turns into experts. Say so before the key-by-key report.
  for (const auto& [block, layer] : model.moe_layer_list) {
    if (state.find(model.mlp_key(block) + ".fc1.weight") != nullptr) {
      throw CheckpointError(fmt::format(
          "{} is a dense checkpoint ({}.fc1.weight is a dense MLP) but the model has MoE blocks: build the MoE's "
          "initial weights with `moejet recycle --dense {} --model CONFIG --out INIT.safetensors`, then pass "
          "--init INIT.safetensors",
          source, model.mlp_key(block), source));
    }
  }
  auto report = io::load_state_dict(model, state, opts, source);
  std::string summary = report.summary();
  for (const auto& n : notes) {
    summary += "\n  " + n;
  }
  return summary;
}

LoadedModel load_model(const std::string& path, json model_json, const std::function<void(json&)>& edit) {
  LoadedModel m;
  auto state = io::read_checkpoint(path, &m.metadata);
  m.config_json = model_json.is_null() ? model_config_from_metadata(m.metadata, path) : std::move(model_json);
  check<ConfigError>(!m.config_json.is_null(),
                     "{}: no moejet model config in this checkpoint; name its architecture with --model "
                     "PRESET_OR_JSON",
                     path);
  if (edit) {
    edit(m.config_json);
  }
  m.config = model_config_from_json(m.config_json);
  m.model = make_model(m.config);
  m.load_summary = load_model_weights(*m.model, std::move(state), path, false);
  return m;
}

void save_model(const std::string& path, const torch::nn::Module& model, const json& model_config, io::Metadata extra) {
  extra[kFormatVersionKey] = kFormatVersion;
  extra[kModelConfigKey] = model_config.dump();
  io::write_safetensors(path, io::module_state_dict(model), extra);
}

}  // namespace moejet::models
