#pragma once
// Weight initialisation as timm's models do it.

#include <torch/types.h>

namespace moejet::nn {

/// timm's trunc_normal_(std, a=-2, b=2): truncated at +-2 absolute, as timm's ViT init does.
void trunc_normal_(torch::Tensor& t, double std);

}  // namespace moejet::nn
