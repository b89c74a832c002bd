#pragma once
// Which blocks of a ViT are MoE and with what layer: the "moe" object of a model config.
//
//   "moe": {"type": "sphero", "layers": [6, 7, 8, 9, 10, 11],
//           "core_experts": 98, "universal_experts": 196, "slots_per_expert": 1,
//           "core_mlp_ratio": 4.0, "universal_mlp_ratio": 1.0}
//
// `layers` are 0-based block indices, as in the state-dict keys (blocks.6 .. blocks.11 are the
// paper's "blocks 7 to 12 of 12"); "last": L is shorthand for the last L blocks. type "soft" is
// Soft MoE (Puigcerver et al.), "sphero" is MoE Jetpack's SpheroMoE with the adaptive dual path,
// "topk" is V-MoE token-choice routing.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/json_util.h"

namespace moejet::moe {

struct MoeConfig {
  std::string type = "none";        ///< "none", "soft", "sphero", "topk", "image" (Mobile V-MoE)
  std::vector<int64_t> layers;      ///< 0-based block indices
  int64_t last = 0;                 ///< alternative to `layers`: the last N blocks
  // Soft MoE and top-k: one expert group.
  int64_t num_experts = 8;
  double mlp_ratio = 4.0;           ///< expert hidden = embed_dim * mlp_ratio
  int64_t slots_per_expert = 1;     ///< soft / sphero
  bool normalize = true;            ///< soft: Soft MoE's l2 normalisation of tokens and phi
  /// soft: the authors' slot_layernorm variant: tokens as they are, phi through LayerNorm(D)
  /// (no l2 normalisation), then times the learnable scale.
  bool soft_slot_layernorm = false;
  /// soft: -1e12 added to the logits at Bernoulli(logits_drop) positions before both softmaxes
  /// (the authors' moe_logits_drop), in training (and in eval with noise_in_eval).
  double logits_drop = 0.0;
  /// L2 normalisation of keys and queries (soft, sphero): "add" x / (|x| + eps), the authors'
  /// l2norm (eps 1e-6), or "clamp" x / max(|x|, eps) (torch's normalize; eps 1e-6 for sphero,
  /// 1e-12 for soft), moejet's earlier form.
  std::string l2_norm = "add";
  // SpheroMoE dual path.
  int64_t core_experts = 0;
  int64_t universal_experts = 0;
  double core_mlp_ratio = 4.0;
  double universal_mlp_ratio = 1.0; ///< MoE Jetpack default: a quarter of the core hidden size
  bool slot_layernorm = true;
  bool offset_scale = false;
  std::string combine = "entmax15"; ///< "entmax15" (authors' code) or "softmax" (Soft MoE)
  double temperature_init = 0.5;
  double temperature_min = 1e-2;    ///< temperatures clamped below this; 0 = no clamp (authors)
  /// std of the N(0, 1) noise on the routing logits. < 0: sphero 1 / (number of experts), as the
  /// released config; soft none (the authors' Soft MoE ViT defaults to 1.0).
  double noise_mult = -1.0;
  bool noise_in_eval = false;       ///< the authors' code adds the noise (and logits drop) in eval too
  /// Orthogonal slot queries phi [E, S, D]: "orthogonal_experts" (authors: torch's orthogonal_ on
  /// phi itself, i.e. rows = experts over S*D) or "orthogonal_slots" (rows = the E*S slots over D).
  std::string phi_init = "orthogonal_experts";
  /// Expert weights of a layer built from scratch: "kaiming_uniform" (the authors'
  /// MultiExpertLinear: kaiming_uniform_(a=sqrt(5)) on [E, out, in], bound 1/sqrt(out*in)),
  /// "trunc_normal" (timm's Linear init, std .02) or "auto": kaiming_uniform for soft and sphero
  /// (the authors' layers), trunc_normal for topk and image.
  std::string expert_init = "auto";
  // Regularisation (MoE Jetpack's "MoE regularisation").
  double expert_drop = 0.0;         ///< dropout inside experts
  /// Drop path on the layer's expert outputs (soft, sphero), rate r = expert_drop_path:
  /// "image" (authors): the whole output of an image, at rate linspace(0, r, depth)[block];
  /// "expert": one expert's outputs of one image, rising linearly 0 -> r over the MoE blocks.
  double expert_drop_path = 0.0;
  std::string expert_drop_path_mode = "image";
  // Top-k token choice (V-MoE) and per-image routing (Mobile V-MoE: top_k of num_experts per
  // image; router_noise and aux_loss_weight, a balance loss over images, apply to its router).
  int64_t top_k = 2;
  double capacity_factor = 1.0;
  double router_noise = 0.0;
  double aux_loss_weight = 0.01;
  bool batch_priority = false;

  bool enabled() const {
    return type != "none";
  }
  /// The resolved block indices for a model of `depth` blocks.
  std::vector<int64_t> block_indices(int64_t depth) const;
  void validate(int64_t depth) const;
};

/// The expert init `c.expert_init` resolves to ("kaiming_uniform" or "trunc_normal").
std::string resolved_expert_init(const MoeConfig& c);

/// Hidden size of an expert of width `dim` with MLP ratio `ratio` (at least 1).
int64_t expert_hidden(int64_t dim, double ratio);

void to_json(json& j, const MoeConfig& c);
MoeConfig moe_config_from_json(const json& j, const std::string& path);

}  // namespace moejet::moe
