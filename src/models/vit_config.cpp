#include "moejet/models/vit_config.h"

#include <map>

namespace moejet::models {

void VitConfig::validate() const {
  check<ConfigError>(img_size > 0 && patch_size > 0, "model: img_size ({}) and patch_size ({}) must be positive",
                     img_size, patch_size);
  check<ConfigError>(img_size % patch_size == 0, "model: img_size {} is not a multiple of patch_size {}", img_size,
                     patch_size);
  check<ConfigError>(in_chans > 0, "model.in_chans: must be positive, got {}", in_chans);
  check<ConfigError>(num_classes >= 0, "model.num_classes: must be >= 0, got {}", num_classes);
  check<ConfigError>(embed_dim > 0 && depth >= 0, "model: embed_dim ({}) and depth ({}) invalid", embed_dim, depth);
  // Bounds far beyond any real ViT, so that a typo or a hostile file's config fails at once
  // instead of building a million blocks (minutes, then bad_alloc).
  check<ConfigError>(depth <= 1024 && embed_dim <= 65536 && img_size <= 16384 && in_chans <= 1024 &&
                         num_classes <= 10000000 && mlp_ratio <= 64,
                     "model: sizes beyond any ViT (depth {} <= 1024, embed_dim {} <= 65536, img_size {} <= 16384, "
                     "in_chans {} <= 1024, num_classes {} <= 10^7, mlp_ratio {} <= 64)",
                     depth, embed_dim, img_size, in_chans, num_classes, mlp_ratio);
  check<ConfigError>(num_heads > 0 && embed_dim % num_heads == 0, "model.num_heads: {} does not divide embed_dim {}",
                     num_heads, embed_dim);
  check<ConfigError>(mlp_ratio > 0, "model.mlp_ratio: must be positive, got {}", mlp_ratio);
  // A ratio that rounds the MLP down to no units would reach libtorch's Linear init as
  // "from is out of bounds for float".
  check<ConfigError>(embed_dim > 0 && mlp_hidden() >= 1,
                     "model.mlp_ratio: {} x embed_dim {} gives an MLP of {} hidden units; it needs at least 1",
                     mlp_ratio, embed_dim, embed_dim > 0 ? mlp_hidden() : 0);
  check<ConfigError>(global_pool == "token" || global_pool == "avg",
                     "model.global_pool: expected \"token\" or \"avg\", got \"{}\"", global_pool);
  check<ConfigError>(global_pool != "token" || class_token, "model: global_pool \"token\" needs class_token = true");
  check<ConfigError>(fc_norm == "auto" || fc_norm == "true" || fc_norm == "false",
                     "model.fc_norm: expected \"auto\", \"true\" or \"false\", got \"{}\"", fc_norm);
  for (double p : {drop_rate, pos_drop_rate, attn_drop_rate, proj_drop_rate, drop_path_rate}) {
    check<ConfigError>(p >= 0.0 && p < 1.0, "model: drop rates must be in [0, 1), got {}", p);
  }
  moe.validate(depth);
}

void to_json(json& j, const VitConfig& c) {
  j = config_to_json(c);
  if (c.moe.enabled()) {
    j["moe"] = c.moe;
  }
}

VitConfig vit_config_from_json(const json& j, const std::string& path) {
  VitConfig c;
  json fields = j;
  if (j.is_object()) {
    std::string preset;
    read_key(j, "preset", preset, path);
    if (!preset.empty()) {
      c = vit_preset(preset);
    }
    // timm's fc_norm is a bool or None; "auto" stands for None.
    if (j.contains("fc_norm") && j.at("fc_norm").is_boolean()) {
      fields["fc_norm"] = j.at("fc_norm").get<bool>() ? "true" : "false";
    }
  }
  read_config(fields, c, path, {"preset", "moe"});
  if (j.contains("moe") && !j.at("moe").is_null()) {
    c.moe = moe::moe_config_from_json(j.at("moe"), path + ".moe");
  }
  c.validate();
  return c;
}

namespace {

VitConfig make(int64_t patch, int64_t dim, int64_t depth, int64_t heads, int64_t img = 224) {
  VitConfig c;
  c.patch_size = patch;
  c.embed_dim = dim;
  c.depth = depth;
  c.num_heads = heads;
  c.img_size = img;
  return c;
}

const std::map<std::string, VitConfig>& presets() {
  static const std::map<std::string, VitConfig> table = {
      {"vit_tiny_patch16_224", make(16, 192, 12, 3)},       {"vit_tiny_patch16_384", make(16, 192, 12, 3, 384)},
      {"vit_small_patch16_224", make(16, 384, 12, 6)},      {"vit_small_patch32_224", make(32, 384, 12, 6)},
      {"vit_small_patch16_384", make(16, 384, 12, 6, 384)}, {"vit_base_patch16_224", make(16, 768, 12, 12)},
      {"vit_base_patch32_224", make(32, 768, 12, 12)},      {"vit_base_patch16_384", make(16, 768, 12, 12, 384)},
      {"vit_large_patch16_224", make(16, 1024, 24, 16)},
  };
  return table;
}

}  // namespace

VitConfig vit_preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string names;
    for (const auto& kv : presets()) {
      names += (names.empty() ? "" : ", ") + kv.first;
    }
    throw ConfigError(fmt::format("unknown model preset '{}' (known: {})", name, names));
  }
  return it->second;
}

std::vector<std::string> vit_preset_names() {
  std::vector<std::string> names;
  for (const auto& kv : presets()) {
    names.push_back(kv.first);
  }
  return names;
}

}  // namespace moejet::models
