#pragma once
// Key layouts of MoE checkpoints. moejet's own keys are timm's for everything dense, and for the
// MoE layers: phi, slot_norm.*, dispatch_temperature, combine_temperature, core.fc1/fc2.* and
// universal.fc1/fc2.* (SpheroMoE), experts.fc1/fc2.* (Soft MoE). The MoE Jetpack authors' code
// (Adlith/MoE-Jetpack, soft_moe.py / fast_softmoe_layer.py) names the same tensors, with the
// same shapes, scales.0 / scales.1, core_experts.vit_fc1/2.*, univ_experts.vit_fc1/2.*,
// experts.vit_fc1/2.* and phi_key_proj / phi_query_proj.{gamma, beta}. Their training (MMPretrain
// on mmengine) saves {"meta", "state_dict", ...} with TimmClassifier's "model." before every key;
// io::read_checkpoint already takes the "state_dict" entry, and the prefix is removed here.
//
// Keys are matched after a block's "mlp." (or from the start, for one layer's own state dict).
// Every reader of checkpoints goes through to_moejet_layout, so either layout loads anywhere;
// to_jetpack_layout is the inverse, for `moejet convert`.

#include <string>
#include <vector>

#include "moejet/io/state_dict.h"

namespace moejet::models {

/// The layout `state` is in: "jetpack" when any key uses the authors' MoE names, else "moejet"
/// (which is timm's for dense models).
std::string detect_key_layout(const io::StateDict& state);

/// `state` with the authors' MoE key names (and an mmengine TimmClassifier "model." prefix on
/// every key) rewritten to moejet's. `notes`, if given, receives one line per rewrite made, e.g.
/// "MoE Jetpack authors' key layout: 26 keys renamed (scales.0 -> dispatch_temperature, ...)".
io::StateDict to_moejet_layout(const io::StateDict& state, std::vector<std::string>* notes = nullptr);

/// The inverse: moejet's MoE key names rewritten to the authors' (dense keys are timm's in both).
io::StateDict to_jetpack_layout(const io::StateDict& state);

}  // namespace moejet::models
