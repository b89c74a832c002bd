#pragma once
// The two random regularisers of timm's blocks: element dropout and per-sample stochastic depth
// (DropPath), with the same semantics as torch's and timm's.

#include <torch/types.h>

namespace moejet::nn {

/// Stochastic depth per sample: zeroes a sample's residual branch with probability p in training
/// and rescales the rest by 1 / (1 - p).
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

/// Inverted dropout, as torch's: zeroes each element with probability p in training and scales
/// the rest by 1 / (1 - p). On the CPU (float or double) it runs kernels::fused_dropout, whose
/// mask torch::manual_seed reproduces; elsewhere torch ops.
torch::Tensor dropout(const torch::Tensor& x, double p, bool training);

}  // namespace moejet::nn
