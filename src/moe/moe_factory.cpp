#include "moejet/moe/moe_factory.h"

#include "moejet/core/error.h"
#include "moejet/moe/per_image_moe.h"
#include "moejet/moe/soft_moe.h"
#include "moejet/moe/sphero_moe.h"
#include "moejet/moe/topk_moe.h"

namespace moejet::moe {

double moe_drop_path_rate(const MoeConfig& c, int64_t block, int64_t depth, int64_t position, int64_t count) {
  if (c.expert_drop_path_mode == "image") {
    return depth > 1 ? c.expert_drop_path * static_cast<double>(block) / static_cast<double>(depth - 1) : 0.0;
  }
  return count > 1 ? c.expert_drop_path * static_cast<double>(position) / static_cast<double>(count - 1)
                   : c.expert_drop_path;
}

std::shared_ptr<MoeLayer> make_moe_layer(const MoeConfig& c, int64_t dim, int64_t block, int64_t depth,
                                         int64_t position, int64_t count) {
  const double drop_path = moe_drop_path_rate(c, block, depth, position, count);
  const std::string expert_init = resolved_expert_init(c);
  if (c.type == "soft") {
    SoftMoeOptions o;
    o.dim = dim;
    o.hidden = expert_hidden(dim, c.mlp_ratio);
    o.num_experts = c.num_experts;
    o.slots_per_expert = c.slots_per_expert;
    o.normalize = c.normalize;
    o.slot_layernorm = c.soft_slot_layernorm;
    o.l2_additive = c.l2_norm == "add";
    o.noise_mult = c.noise_mult > 0 ? c.noise_mult : 0.0;  // soft: no noise unless asked for
    o.noise_in_eval = c.noise_in_eval;
    o.logits_drop = c.logits_drop;
    o.expert_drop = c.expert_drop;
    o.expert_init = expert_init;
    // Soft MoE has only the authors' per-image drop path.
    o.drop_path = c.expert_drop_path_mode == "image" ? drop_path : 0.0;
    return std::make_shared<SoftMoe>(o);
  }
  if (c.type == "sphero") {
    SpheroMoeOptions o;
    o.dim = dim;
    o.core_experts = c.core_experts;
    o.core_hidden = expert_hidden(dim, c.core_mlp_ratio);
    o.universal_experts = c.universal_experts;
    o.universal_hidden = expert_hidden(dim, c.universal_mlp_ratio);
    o.slots_per_expert = c.slots_per_expert;
    o.slot_layernorm = c.slot_layernorm;
    o.offset_scale = c.offset_scale;
    o.temperature_init = c.temperature_init;
    o.temperature_min = c.temperature_min;
    o.noise_mult = c.noise_mult;
    o.noise_in_eval = c.noise_in_eval;
    o.combine = c.combine;
    o.phi_init = c.phi_init;
    o.l2_additive = c.l2_norm == "add";
    o.expert_init = expert_init;
    o.expert_drop = c.expert_drop;
    o.expert_drop_path = drop_path;
    o.drop_path_per_image = c.expert_drop_path_mode == "image";
    return std::make_shared<SpheroMoe>(o);
  }
  if (c.type == "topk") {
    TopKMoeOptions o;
    o.dim = dim;
    o.hidden = expert_hidden(dim, c.mlp_ratio);
    o.num_experts = c.num_experts;
    o.k = c.top_k;
    o.capacity_factor = c.capacity_factor;
    o.noise_std = c.router_noise;
    o.aux_loss_weight = c.aux_loss_weight;
    o.expert_drop = c.expert_drop;
    o.expert_init = expert_init;
    o.batch_priority = c.batch_priority;
    return std::make_shared<TopKMoe>(o);
  }
  if (c.type == "image") {
    PerImageMoeOptions o;
    o.dim = dim;
    o.hidden = expert_hidden(dim, c.mlp_ratio);
    o.num_experts = c.num_experts;
    o.k = c.top_k;
    o.expert_drop = c.expert_drop;
    o.expert_init = expert_init;
    return std::make_shared<PerImageMoe>(o);
  }
  throw ConfigError(fmt::format("model.moe.type: no MoE layer of type \"{}\"", c.type));
}

}  // namespace moejet::moe
