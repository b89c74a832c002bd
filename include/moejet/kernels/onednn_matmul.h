#pragma once
// oneDNN's matmul primitive called on torch tensors' memory: the fastest fp32 GEMM on x86 CPUs
// with AVX-512 (its brgemm kernels reached 1.2-2x OpenBLAS 0.3.21 on ViT-T's shapes, and OpenBLAS
// picks a generic kernel on CPUs newer than it knows), without the layout conversions of ATen's
// mkldnn tensors. Strided operands are described to oneDNN as they lie (a transposed view is not
// copied). Built when CMake finds oneDNN (Debian: libdnnl-dev, the library libtorch itself loads);
// everywhere else `onednn_available()` is false and kernels/matmul.h uses ATen.

#include <string>

#include <torch/types.h>

namespace moejet::kernels {

/// True when oneDNN is compiled in and not turned off by MOEJET_ONEDNN=0.
bool onednn_available();

/// True when oneDNN runs bf16 products on AMX tiles here (Sapphire Rapids and later). Its AMX
/// kernels (brgemm) take only matrices whose batch dims are dense; a batched product of strided
/// views (attention heads in place) falls to a kernel without AMX.
bool onednn_amx();

/// Whether a tensor's last two dims are a row- or column-major matrix (either may have stride 1;
/// a size-1 dim's stride is arbitrary), the layouts onednn_matmul describes without a copy.
bool plain_matrix(const torch::Tensor& t);

/// Whether oneDNN is on and the operands' shapes make a product onednn_matmul takes: CPU, 2 to 4
/// dims with equal batch dims, a [..., M, K] x [..., K, N], neither empty (dtypes and layouts aside).
bool onednn_matmul_shapes(const torch::Tensor& a, const torch::Tensor& b);

/// Whether onednn_matmul takes these operands: CPU, both fp32 or both bf16, 2 to 4 dims with
/// equal batch dims, each matrix (last two dims) row- or column-major.
bool onednn_matmul_supports(const torch::Tensor& a, const torch::Tensor& b);

/// a [..., M, K] x b [..., K, N] (+ bias [N] on every row) -> fp32 [..., M, N], contiguous.
/// Throws when !onednn_matmul_supports(a, b).
torch::Tensor onednn_matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {});

/// alpha * (a x b) (+ bias) into `out`: fp32 or bf16 [..., M, N] whose matrices are row- or
/// column-major with any batch strides (e.g. one expert's slice of a batch, or attention heads
/// written straight into a [B, N, H, hd] tensor). Products accumulate in fp32 and are rounded
/// once into a bf16 `out`. `mul` (a tensor like out) multiplies the result element by element
/// inside the product (a oneDNN post-op, no pass of its own). A scale other than 1 or a
/// multiplier takes no bias.
void onednn_matmul_out(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias,
                       const torch::Tensor& out, double alpha = 1.0, const torch::Tensor& mul = {});

/// The implementation oneDNN picks for these operands, e.g. "brg:avx512_core" ("" without oneDNN):
/// tests check that no shape falls to a reference kernel.
std::string onednn_matmul_impl(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace moejet::kernels
