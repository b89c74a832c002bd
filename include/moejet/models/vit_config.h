#pragma once
// Configuration of a Vision Transformer, mirroring timm's VisionTransformer constructor arguments
// (img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
// class_token, global_pool, fc_norm, init_values, drop rates) so that a timm model and a moejet
// model built from the same numbers have the same state-dict keys and shapes. Named presets
// (vit_tiny_patch16_224, ...) are timm's registered variants.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/config_fields.h"
#include "moejet/core/json_util.h"
#include "moejet/moe/moe_config.h"

namespace moejet::models {

struct VitConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  bool class_token = true;
  std::string global_pool = "token";  ///< "token" (class token) or "avg" (mean of patch tokens)
  /// Norm after pooling instead of before it ("fc_norm"); "auto" = timm's default (on for avg).
  std::string fc_norm = "auto";
  double init_values = 0.0;  ///< LayerScale init (ls1/ls2.gamma); 0 = no LayerScale
  double drop_rate = 0.0;    ///< dropout before the head
  double pos_drop_rate = 0.0;
  double attn_drop_rate = 0.0;
  double proj_drop_rate = 0.0;
  double drop_path_rate = 0.0;  ///< stochastic depth, linearly increasing over blocks
  double norm_eps = 1e-6;
  MOEJET_CONFIG_FIELDS(img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                       class_token, global_pool, fc_norm, init_values, drop_rate, pos_drop_rate, attn_drop_rate,
                       proj_drop_rate, drop_path_rate, norm_eps)
  /// Which blocks' MLPs are MoE layers, and which kind (see moe/moe_config.h); off by default.
  /// The "moe" key, written only when enabled.
  moe::MoeConfig moe;

  int64_t grid_size() const {
    return img_size / patch_size;
  }
  int64_t num_patches() const {
    return grid_size() * grid_size();
  }
  int64_t num_prefix_tokens() const {
    return class_token ? 1 : 0;
  }
  int64_t mlp_hidden() const {
    return static_cast<int64_t>(static_cast<double>(embed_dim) * mlp_ratio);
  }
  bool use_fc_norm() const {
    return fc_norm == "auto" ? global_pool == "avg" : fc_norm == "true";
  }
  /// Throws ConfigError naming the field for inconsistent values (e.g. heads not dividing dim).
  void validate() const;
};

void to_json(json& j, const VitConfig& c);
/// Strict parse: unknown keys throw. A "preset" key (e.g. "vit_tiny_patch16_224") sets the
/// preset's values first; other keys override them.
VitConfig vit_config_from_json(const json& j, const std::string& path = "model");

/// timm preset by name; throws ConfigError listing the known names.
VitConfig vit_preset(const std::string& name);
std::vector<std::string> vit_preset_names();

}  // namespace moejet::models
