#pragma once
// What the MoE layers' option structs share. Each layer type declares its own options struct
// (SoftMoeOptions, SpheroMoeOptions, TopKMoeOptions, PerImageMoeOptions) with its JSON fields
// listed once (core/config_fields.h); moe_config.h holds the chosen one. The helpers here are
// the few rules several of them follow: expert widths from an MLP ratio, the "auto" expert init,
// the drop-path rate over depth, and the checks of values that share a meaning.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/config_fields.h"

namespace moejet::moe {

/// Hidden size of an expert of width `dim` with MLP ratio `ratio` (at least 1).
int64_t expert_hidden(int64_t dim, double ratio);

/// `init`, or `layer_default` when it is "auto".
std::string resolve_expert_init(const std::string& init, const char* layer_default);

/// The drop-path rate of the MoE layer in block `block` (the `position`-th of `count` MoE blocks)
/// for expert_drop_path `rate`: mode "image", the authors', takes torch.linspace(0, rate,
/// depth)[block]; "expert" rises linearly from 0 over the MoE blocks.
double moe_drop_path_rate(double rate, const std::string& mode, int64_t block, int64_t depth, int64_t position,
                          int64_t count);

/// ConfigError "model.moe.<key>: expected a, b or c, got "v"" unless `value` is one of `allowed`.
void check_choice(const std::string& value, const std::vector<std::string>& allowed, const char* key);
/// ConfigError unless 0 < `value` <= `max` (sizes: expert counts, slots, MLP ratios).
void check_size(double value, double max, const char* key);
/// ConfigError unless `value` is in [0, 1) (dropout-like rates).
void check_rate(double value, const char* key);
/// The checks of the options every layer's experts have: `expert_init` (auto, kaiming_uniform or
/// trunc_normal) and the dropout rate `expert_drop` inside them.
void check_experts(const std::string& expert_init, double expert_drop);
/// ConfigError unless `value` is finite and >= 0 (noise levels, loss weights).
void check_non_negative(double value, const char* key);
/// The checks of a router that sends each token or image to `top_k` of `num_experts` experts with
/// noise `router_noise` and a balance loss weighted `aux_loss_weight`.
void check_router(int64_t num_experts, int64_t top_k, double router_noise, double aux_loss_weight);

}  // namespace moejet::moe
