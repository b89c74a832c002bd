#pragma once
// LayerNorm over the last dim as one pass per row on the CPU (AVX-512 BF16 CPUs), forward and
// backward. Under bf16 products a ViT block's norms feed bf16 products (qkv, fc1): libtorch's
// kernel wrote fp32 rows that the next layer cast to bf16, and that layer's bf16 input gradient
// was cast back before the norm's backward; on ViT-T's [6304, 192] at 2 threads, 1.07 ms forward
// + backward with the casts. Here the forward writes the normalised rows in the dtype the next
// product takes (bf16 under bf16 products when asked, as kernels/matmul.h's ProductOut::compute;
// 0.49 ms), keeps each row's mean and 1/std, and the backward takes a bf16 or fp32 output
// gradient and returns x's gradient in fp32. The weight and bias gradients are summed per block
// of rows and then over the blocks in a fixed order, so any thread count gives the same sums.
// Elsewhere (CUDA, no AVX-512 BF16, other dtypes, tracing, MOEJET_AVX512_ROWS=0) it is torch's
// layer_norm, in fp32.

#include <torch/types.h>

#include "moejet/kernels/matmul.h"

namespace moejet::kernels {

/// Whether layer_norm runs the fused kernel for these tensors (CPU fp32 x, weight and bias of
/// x's width, a CPU with AVX-512 BF16, not tracing).
bool fused_layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

/// torch::layer_norm(x, {x.size(-1)}, weight, bias, eps). `out` = ProductOut::compute returns
/// bf16 under bf16 products (kernels/precision.h) where the fused kernel runs, for a result that
/// only feeds a product; otherwise the result is fp32.
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                         ProductOut out = ProductOut::fp32);

}  // namespace moejet::kernels
