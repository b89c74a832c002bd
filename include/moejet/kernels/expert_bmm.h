#pragma once
// Batched matrix products over the expert dimension, as torch::bmm / baddbmm, for the expert MLPs
// (and the backward of their weights) and the routing products: out[e] = a[e] b[e] (+ bias[e] on
// every row), returned in fp32. On the CPU with oneDNN (kernels/onednn_matmul.h): its matmul on the
// tensors' memory, either layout of each matrix (row-major or its transpose view), so no transposed
// operand is copied. Without oneDNN, in fp32 with a BLAS in the process (kernels/blas.h): one sgemm
// per batch entry on the tensors' memory; everywhere else torch::bmm / baddbmm. In bf16 (either
// operand bf16, or this thread's precision bf16: kernels/precision.h) the operands are rounded to
// bf16 and the products accumulated in fp32; `out` = ProductOut::compute then returns the result
// (bias included) rounded once to bf16, for an expert MLP's hidden layer (as kernels/matmul.h).

#include <torch/types.h>

#include "moejet/kernels/matmul.h"

namespace moejet::kernels {

/// a [E, M, K], b [E, K, N], bias undefined or [E, N] -> [E, M, N] (contiguous on the BLAS path).
///
/// `thread_per_matrix` (the BLAS path): with OpenBLAS, run it single-threaded and give each thread whole
/// matrices. The expert GEMMs are small (batch x slots rows each), and OpenBLAS spreading each
/// one over its threads pays a wake-up and a join per GEMM: this made the SpheroMoE ViT-T expert
/// MLPs' forward + backward 1.2-1.3x faster at batch 64-128 on 2 cores, and the routing products
/// ([294 x 196] x [196 x 192] per image) 1.13x, once OpenBLAS's idle workers stop spinning
/// (core/blas_runtime.h: before that, OpenBLAS's own split was the faster one for those).
torch::Tensor expert_bmm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = torch::Tensor(),
                         bool thread_per_matrix = true, ProductOut out = ProductOut::fp32);

/// `t` rounded to bf16 as an operand of a batched product; where oneDNN has AMX (onednn_amx()),
/// laid out as a dense batch, the only batch layout its AMX kernels take. Soft routing's slots and
/// expert outputs arrive as transposed views ([E, B, D] of a [B, E, D] tensor), which oneDNN ran
/// on gemm:jit, without AMX (V-JetMoE-T's expert products 1.4-2x their time on the dense batch).
/// The forward products take their operands through it; their backward takes the gradients as
/// they come (made dense too, the V-JetMoE-T bf16 step was 4% slower in six alternating pairs).
/// Not differentiable.
torch::Tensor bf16_batch_operand(const torch::Tensor& t);

/// Differentiable a [E, M, K] x b [E, K, N] on expert_bmm, forward and backward (the routing
/// products of Soft MoE / SpheroMoE: slots = dispatch x, out = combine y).
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace moejet::kernels
