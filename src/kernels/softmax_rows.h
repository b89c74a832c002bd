#pragma once
// Softmax along the last dim of contiguous fp32 rows, and its backward, without autograd: the
// one implementation behind attention's probabilities (kernels/attention.h) and the soft-routing
// softmax (kernels/row_ops.h). Rows are split over torch's threads; with AVX-512 (BF16) each row
// is one pass that writes its result in the dtype asked for, else libtorch's vectorised kernel
// runs on each row range. Private to src/kernels.

#include <torch/types.h>

namespace moejet::kernels {

/// softmax(s, -1) of contiguous fp32 `s`, as `type` (fp32 or bf16).
torch::Tensor softmax_rows(const torch::Tensor& s, torch::ScalarType type);

/// The softmax's backward, p (dp - rowsum(dp p)), from contiguous fp32 `dp` and contiguous `p`
/// (fp32 or bf16), in p's dtype.
torch::Tensor softmax_backward_rows(const torch::Tensor& dp, const torch::Tensor& p);

}  // namespace moejet::kernels
