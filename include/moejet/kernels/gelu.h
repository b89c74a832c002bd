#pragma once
// GELU, x * Phi(x) with the exact (erf) Phi, as timm's MLPs use it, for the hidden layer of the
// dense and expert MLPs. torch's gelu keeps its input for the backward and evaluates erf and exp
// again there (on ViT-T at batch 32, 2.5 ms a block in bf16, twice its forward). Here one AVX-512
// pass computes the output and the derivative Phi(x) + x phi(x) together (they share
// exp(-x^2 / 2)), and keeps the derivative instead of the input, so that the backward is one
// multiplication. The derivative is kept in the input's dtype (bf16 under bf16 products, as the
// input was). Other CPUs, devices, dtypes and tracing run torch's gelu.

#include <torch/types.h>

namespace moejet::kernels {

/// GELU (erf form) of x, differentiable; the result has x's dtype.
torch::Tensor gelu(const torch::Tensor& x);

/// Whether gelu_linear() runs: gelu() fused for x, oneDNN built in, autograd on, fp32 weight
/// [out, in] and bias on the CPU.
bool fused_gelu_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

/// An MLP's second half, linear(gelu(x), weight, bias), as one autograd function with fp32
/// results: products in x's dtype (bf16 under bf16 products), and in the backward the GELU's
/// derivative multiplies the input gradient inside its product (a oneDNN post-op) instead of in
/// a pass of its own. Throws where !fused_gelu_linear(...).
torch::Tensor gelu_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace moejet::kernels
