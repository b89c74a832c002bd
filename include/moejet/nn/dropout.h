#pragma once
// The two random regularisers of timm's blocks: element dropout and per-sample stochastic depth
// (DropPath), with the same semantics as torch's and timm's.

#include <torch/types.h>

namespace moejet::nn {

/// Stochastic depth per sample: zeroes a sample's residual branch with probability p in training
/// and rescales the rest by 1 / (1 - p).
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

/// Inverted dropout, as torch's: zeroes each element with probability p in training and scales
/// the rest by 1 / (1 - p). On the CPU (float or double) one fused kernel draws the mask from a
/// counter-based generator seeded by torch's default generator (so torch::manual_seed makes it
/// reproducible, whatever the thread count), keeps it as bytes for the backward, and applies it
/// in the same pass (p is rounded to a multiple of 2^-32). SpheroMoE's expert dropout draws
/// millions of mask bits per step; libtorch 1.13's serial Mersenne-Twister draws cost more than
/// the expert GEMMs around them.
torch::Tensor dropout(const torch::Tensor& x, double p, bool training);

}  // namespace moejet::nn
