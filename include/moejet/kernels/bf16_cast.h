#pragma once
// fp32 <-> bf16 conversion for the mixed-precision products (kernels/matmul.h), differentiable
// (the gradient of one direction is the other). Every bf16 product casts its activations both
// ways, forward and backward, and ATen 1.13's conversion loop was a quarter of a ViT-T bf16 train
// step; on a CPU with AVX512_BF16 this one converts 16 values per instruction on all cores.
// Rounding is to nearest even, as ATen's; elsewhere (other CPUs, CUDA, strided tensors) ATen's
// conversion runs.

#include <torch/types.h>

namespace moejet::kernels {

/// x as bf16 (x itself when already bf16); the gradient flows back as x's dtype.
torch::Tensor to_bf16(const torch::Tensor& x);

/// x's values rounded to bf16 into `out` (contiguous, bf16, x's sizes), as to_bf16 rounds them.
/// Not differentiable.
void to_bf16_into(const torch::Tensor& x, torch::Tensor& out);

/// x as fp32 (x itself when already fp32); the gradient flows back as x's dtype.
torch::Tensor to_fp32(const torch::Tensor& x);

/// x.sum(dim) accumulated and returned in fp32 (a bias gradient). ATen's sum with an fp32 dtype
/// converts a bf16 x to fp32 first, a copy twice x's size (it was 2.5% of the main job's Soft MoE
/// step under `perf`); a contiguous bf16 x on the CPU is summed as it lies. Not differentiable.
torch::Tensor sum_fp32(const torch::Tensor& x, int64_t dim);

}  // namespace moejet::kernels
