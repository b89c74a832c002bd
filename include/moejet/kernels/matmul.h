#pragma once
// The one dispatch point of moejet's matrix products: the dense layers (Linear), attention's two
// batched products, the routing products and the convolutions go through these functions, which
// pick the kernel from the device, the dtype and this thread's precision (kernels/precision.h):
//
//   CPU, fp32, oneDNN built in   oneDNN matmul on the tensors' memory (kernels/onednn_matmul.h),
//                                forward and both backward products
//   CPU, bf16, oneDNN            the same in bf16: operands rounded once, results and gradients
//                                straight from the products in fp32 (or the inputs' dtypes);
//                                a Linear layer's fp32 bias added inside the product
//   bf16 (otherwise)             operands rounded to bf16, ATen's op in bf16 (cuBLAS on CUDA;
//                                ATen's bf16 kernels on a CPU without oneDNN), the result in fp32
//   otherwise (CUDA fp32, ...)   ATen's op unchanged (cuBLAS)
//
// Expert GEMMs keep their own batched kernel (kernels/expert_bmm.h), which follows the same
// precision.

#include <torch/types.h>

#include "moejet/kernels/precision.h"

namespace moejet::kernels {

/// The dtype a product returns in bf16. `fp32` (the default) for a result that joins the fp32
/// stream (a residual, a norm, a loss). `compute` keeps the bf16 result for consumers whose own
/// output only feeds another bf16 product (attention's q, k, v and probabilities, the MLP's hidden
/// layer through GELU): those values would be rounded to bf16 there anyway, and each cast skipped
/// saves a pass over the activations forward and backward (casts were a quarter of a ViT-T bf16
/// step). The op in between (softmax, GELU) still computes in fp32 internally. In fp32, both are fp32.
enum class ProductOut { fp32, compute };

/// y = x W^T + b, as torch::linear (x [..., in], weight [out, in], bias [out] or undefined).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {},
                     ProductOut out = ProductOut::fp32);

/// a [..., M, K] x b [..., K, N] with equal batch dims, or x b [K, N] (as torch::matmul for
/// 2-4 dim operands).
torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b, ProductOut out = ProductOut::fp32);

/// 2-d convolution, as torch::conv2d; in bf16 on bf16 operands.
torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     torch::IntArrayRef stride, torch::IntArrayRef padding, int64_t groups = 1);

/// The kernel that a product of this precision runs on, on `device`, e.g. "oneDNN fp32
/// (brg:avx512_core)" or "OpenBLAS fp32" (for `moejet bench` and the run log).
std::string gemm_kernel(const c10::Device& device, Precision p);

}  // namespace moejet::kernels
