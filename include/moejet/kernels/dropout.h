#pragma once
// Inverted dropout on the CPU in one fused pass: the keep mask is drawn from a counter-based
// generator (kernels/counter_random.h) keyed by torch's default generator, so torch::manual_seed
// reproduces it whatever the thread count; it is kept as bytes for the backward and applied in the
// same pass. SpheroMoE's expert dropout draws millions of mask bits per step, and libtorch 1.13's
// serial Mersenne-Twister draws cost more than the expert GEMMs around them. nn::dropout picks this
// kernel for CPU float, double and bfloat16 tensors (bf16 scaled in fp32) and torch ops elsewhere.

#include <torch/types.h>

namespace moejet::kernels {

/// y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) (p rounded to a multiple of 2^-32), with its
/// backward. x: a CPU float, double or bfloat16 tensor; p in (0, 1).
torch::Tensor fused_dropout(const torch::Tensor& x, double p);

}  // namespace moejet::kernels
