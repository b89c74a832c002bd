#pragma once
// Builds the MoE layer a MoeConfig asks for, in block `block` of `depth` blocks, the `position`-th
// of `count` MoE blocks (regularisation that rises over depth needs to know where it is).

#include <memory>

#include "moejet/moe/moe_config.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

std::shared_ptr<MoeLayer> make_moe_layer(const MoeConfig& config, int64_t dim, int64_t block, int64_t depth,
                                         int64_t position, int64_t count);

}  // namespace moejet::moe
