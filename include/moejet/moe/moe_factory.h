#pragma once
// Builds the MoE layer a MoeConfig asks for, for the `position`-th of `count` MoE blocks (layers
// whose regularisation rises over depth need to know where they are).

#include <memory>

#include "moejet/moe/moe_config.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

std::shared_ptr<MoeLayer> make_moe_layer(const MoeConfig& config, int64_t dim, int64_t position,
                                         int64_t count);

}  // namespace moejet::moe
