#pragma once
// 1.5-entmax (Peters, Niculae & Martins, "Sparse Sequence-to-Sequence Models", ACL 2019): the
// mapping y = argmax_{p in simplex} <p, x> + H_1.5(p) with the Tsallis entropy of alpha = 1.5,
// whose solution is y_i = [x_i / 2 - tau]_+^2 with tau chosen so that y sums to one. It sits
// between softmax (alpha = 1, dense) and sparsemax (alpha = 2): smooth almost everywhere, yet it
// assigns exact zeros to low scores. SpheroMoE uses it for the combine weights (token <- slot
// outputs) so that each token draws on a few slots instead of a softmax's thin smear over all of
// them — a sparse combine that sharpens expert specialisation; the MoE Jetpack authors' code uses
// the `entmax` package's entmax15 there. This is the same exact function and gradient; on the CPU
// the threshold is found without sorting (safeguarded Newton steps, exact at the end).

#include <torch/types.h>

#include <cstdint>

namespace moejet::kernels {

/// Exact 1.5-entmax of `x` along `dim` (any dim; float or double; CPU or CUDA). Differentiable
/// through a custom backward: dx = g * (dy - <dy, g> / sum(g)) with g = sqrt(y).
torch::Tensor entmax15(const torch::Tensor& x, int64_t dim = -1);

/// The forward in plain tensor ops (sort, cumsum, gather), used off the CPU; the CPU path is a
/// vectorised row kernel. Exposed so tests can hold the two to each other.
torch::Tensor entmax15_generic(const torch::Tensor& x, int64_t dim = -1);

}  // namespace moejet::kernels
