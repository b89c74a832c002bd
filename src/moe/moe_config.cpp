#include "moejet/moe/moe_config.h"

#include <algorithm>

namespace moejet::moe {

std::vector<int64_t> MoeConfig::block_indices(int64_t depth) const {
  if (!enabled()) {
    return {};
  }
  if (!layers.empty()) {
    auto out = layers;
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<int64_t> out;
  for (int64_t i = std::max<int64_t>(depth - last, 0); i < depth; ++i) {
    out.push_back(i);
  }
  return out;
}

std::string resolved_expert_init(const MoeConfig& c) {
  if (c.expert_init != "auto") {
    return c.expert_init;
  }
  return c.type == "soft" || c.type == "sphero" ? "kaiming_uniform" : "trunc_normal";
}

int64_t expert_hidden(int64_t dim, double ratio) {
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(dim) * ratio));
}

void MoeConfig::validate(int64_t depth) const {
  check<ConfigError>(type == "none" || type == "soft" || type == "sphero" || type == "topk" || type == "image",
                     "model.moe.type: expected none, soft, sphero, topk or image, got \"{}\"", type);
  if (!enabled()) {
    return;
  }
  check<ConfigError>(layers.empty() || last == 0, "model.moe: give either 'layers' or 'last', not both");
  check<ConfigError>(!layers.empty() || last > 0, "model.moe: 'layers' or 'last' must name at least one block");
  for (size_t k = 0; k < layers.size(); ++k) {
    const int64_t i = layers[k];
    check<ConfigError>(i >= 0 && i < depth, "model.moe.layers: block {} out of range for depth {}", i, depth);
    check<ConfigError>(std::find(layers.begin(), layers.begin() + static_cast<std::ptrdiff_t>(k), i) ==
                           layers.begin() + static_cast<std::ptrdiff_t>(k),
                       "model.moe.layers: block {} is listed twice", i);
  }
  check<ConfigError>(last <= depth, "model.moe.last: {} exceeds depth {}", last, depth);
  check<ConfigError>(slots_per_expert > 0, "model.moe.slots_per_expert: must be > 0");
  check<ConfigError>(num_experts <= 65536 && slots_per_expert <= 65536 && core_experts <= 65536 &&
                         universal_experts <= 65536 && mlp_ratio <= 64 && core_mlp_ratio <= 64 &&
                         universal_mlp_ratio <= 64,
                     "model.moe: sizes beyond any MoE (experts and slots <= 65536, mlp ratios <= 64)");
  check<ConfigError>(mlp_ratio > 0 && core_mlp_ratio > 0 && universal_mlp_ratio > 0,
                     "model.moe: mlp ratios must be > 0");
  check<ConfigError>(expert_drop >= 0 && expert_drop < 1 && expert_drop_path >= 0 && expert_drop_path < 1,
                     "model.moe: expert_drop and expert_drop_path must be in [0, 1)");
  if (type == "sphero") {
    check<ConfigError>(core_experts > 0, "model.moe.core_experts: SpheroMoE needs at least one core expert");
    check<ConfigError>(universal_experts >= 0, "model.moe.universal_experts: must be >= 0");
    check<ConfigError>(combine == "entmax15" || combine == "softmax",
                       "model.moe.combine: expected entmax15 or softmax, got \"{}\"", combine);
    check<ConfigError>(temperature_init > 0, "model.moe.temperature_init: must be > 0");
    check<ConfigError>(temperature_min >= 0 && temperature_min < temperature_init,
                       "model.moe.temperature_min: must be in [0, temperature_init), got {}", temperature_min);
    check<ConfigError>(phi_init == "orthogonal_experts" || phi_init == "orthogonal_slots",
                       "model.moe.phi_init: expected orthogonal_experts or orthogonal_slots, got \"{}\"", phi_init);
  } else {
    check<ConfigError>(num_experts > 0, "model.moe.num_experts: must be > 0");
  }
  check<ConfigError>(l2_norm == "add" || l2_norm == "clamp",
                     "model.moe.l2_norm: expected add or clamp, got \"{}\"", l2_norm);
  check<ConfigError>(logits_drop >= 0 && logits_drop < 1, "model.moe.logits_drop: must be in [0, 1), got {}",
                     logits_drop);
  check<ConfigError>((logits_drop == 0 && !soft_slot_layernorm) || type == "soft",
                     "model.moe: logits_drop and soft_slot_layernorm apply to type soft only (got type {})", type);
  check<ConfigError>(expert_init == "auto" || expert_init == "kaiming_uniform" || expert_init == "trunc_normal",
                     "model.moe.expert_init: expected auto, kaiming_uniform or trunc_normal, got \"{}\"", expert_init);
  check<ConfigError>(expert_drop_path_mode == "image" || expert_drop_path_mode == "expert",
                     "model.moe.expert_drop_path_mode: expected image or expert, got \"{}\"", expert_drop_path_mode);
  if (type == "topk" || type == "image") {
    check<ConfigError>(std::isfinite(capacity_factor) && capacity_factor > 0,
                       "model.moe.capacity_factor: must be > 0, got {}", capacity_factor);
    check<ConfigError>(top_k >= 1 && top_k <= num_experts,
                       "model.moe.top_k: must be in [1, num_experts={}], got {}", num_experts, top_k);
  }
}

void to_json(json& j, const MoeConfig& c) {
  j = json{{"type", c.type},
           {"layers", c.layers},
           {"last", c.last},
           {"num_experts", c.num_experts},
           {"mlp_ratio", c.mlp_ratio},
           {"slots_per_expert", c.slots_per_expert},
           {"normalize", c.normalize},
           {"soft_slot_layernorm", c.soft_slot_layernorm},
           {"logits_drop", c.logits_drop},
           {"l2_norm", c.l2_norm},
           {"core_experts", c.core_experts},
           {"universal_experts", c.universal_experts},
           {"core_mlp_ratio", c.core_mlp_ratio},
           {"universal_mlp_ratio", c.universal_mlp_ratio},
           {"slot_layernorm", c.slot_layernorm},
           {"offset_scale", c.offset_scale},
           {"combine", c.combine},
           {"temperature_init", c.temperature_init},
           {"temperature_min", c.temperature_min},
           {"noise_mult", c.noise_mult},
           {"noise_in_eval", c.noise_in_eval},
           {"phi_init", c.phi_init},
           {"expert_init", c.expert_init},
           {"expert_drop", c.expert_drop},
           {"expert_drop_path", c.expert_drop_path},
           {"expert_drop_path_mode", c.expert_drop_path_mode},
           {"top_k", c.top_k},
           {"capacity_factor", c.capacity_factor},
           {"router_noise", c.router_noise},
           {"aux_loss_weight", c.aux_loss_weight},
           {"batch_priority", c.batch_priority}};
}

MoeConfig moe_config_from_json(const json& j, const std::string& path) {
  check_known_keys(j,
                   {"type", "layers", "last", "num_experts", "mlp_ratio", "slots_per_expert",
                    "normalize", "soft_slot_layernorm", "logits_drop", "l2_norm", "core_experts", "universal_experts", "core_mlp_ratio",
                    "universal_mlp_ratio", "slot_layernorm", "offset_scale", "combine",
                    "temperature_init", "temperature_min", "noise_mult", "noise_in_eval", "phi_init",
                    "expert_init", "expert_drop", "expert_drop_path", "expert_drop_path_mode", "top_k",
                    "capacity_factor", "router_noise", "aux_loss_weight", "batch_priority"},
                   path);
  MoeConfig c;
  read_key(j, "type", c.type, path);
  read_key(j, "layers", c.layers, path);
  read_key(j, "last", c.last, path);
  read_key(j, "num_experts", c.num_experts, path);
  read_key(j, "mlp_ratio", c.mlp_ratio, path);
  read_key(j, "slots_per_expert", c.slots_per_expert, path);
  read_key(j, "normalize", c.normalize, path);
  read_key(j, "soft_slot_layernorm", c.soft_slot_layernorm, path);
  read_key(j, "logits_drop", c.logits_drop, path);
  read_key(j, "l2_norm", c.l2_norm, path);
  read_key(j, "core_experts", c.core_experts, path);
  read_key(j, "universal_experts", c.universal_experts, path);
  read_key(j, "core_mlp_ratio", c.core_mlp_ratio, path);
  read_key(j, "universal_mlp_ratio", c.universal_mlp_ratio, path);
  read_key(j, "slot_layernorm", c.slot_layernorm, path);
  read_key(j, "offset_scale", c.offset_scale, path);
  read_key(j, "combine", c.combine, path);
  read_key(j, "temperature_init", c.temperature_init, path);
  read_key(j, "temperature_min", c.temperature_min, path);
  read_key(j, "phi_init", c.phi_init, path);
  read_key(j, "expert_init", c.expert_init, path);
  read_key(j, "expert_drop_path_mode", c.expert_drop_path_mode, path);
  read_key(j, "noise_mult", c.noise_mult, path);
  read_key(j, "noise_in_eval", c.noise_in_eval, path);
  read_key(j, "expert_drop", c.expert_drop, path);
  read_key(j, "expert_drop_path", c.expert_drop_path, path);
  read_key(j, "top_k", c.top_k, path);
  read_key(j, "capacity_factor", c.capacity_factor, path);
  read_key(j, "router_noise", c.router_noise, path);
  read_key(j, "aux_loss_weight", c.aux_loss_weight, path);
  read_key(j, "batch_priority", c.batch_priority, path);
  return c;
}

}  // namespace moejet::moe
