#pragma once
// The core of multi-head self-attention, between timm's qkv and proj Linear layers:
// softmax(q k^T * scale) v for every head, from the packed projection qkv [B, N, 3 * D] (laid out
// [B, N, 3, H, hd], as timm's reshape reads it) to the heads' outputs merged as [B, N, D].
//
// Written as tensor ops (split q, k, v; scale q; two batched products; softmax; merge heads) a
// ViT-T block spent more on copies than on these products: ATen's batched product copies every
// strided head view to a contiguous one, the heads are merged by another copy, and autograd
// stacks the three gradients back into one. Here oneDNN's batched matmul reads the heads where
// they lie in qkv, writes the merged output and the q, k, v gradients in place, folds the scale
// into the products, and the softmax runs in fp32 on rows split over the threads. The
// probabilities are kept for the backward in qkv's dtype (bf16 under bf16 products, as before).
// Where oneDNN runs bf16 products on AMX, whose kernels take only dense batches of matrices, the
// heads are copied to contiguous [B, H, N, hd] tensors first (AttentionHeads::copied): a strided
// batched product there falls to a kernel without AMX, 3x slower than copies and products.
// Elsewhere (other devices and dtypes, builds without oneDNN, tracing) fused_attention() is
// false and the caller runs the tensor ops.

#include <torch/types.h>

namespace moejet::kernels {

/// Where the products read the heads of q, k, v and write their gradients.
enum class AttentionHeads {
  automatic,  ///< attention_heads_for(qkv's dtype)
  in_place,   ///< views of qkv and of its gradient, as they lie: no copy
  copied,     ///< contiguous [B, H, N, hd] copies, for kernels that take dense batches only
};

/// The layout attention() takes for this dtype on this machine: copied for bf16 where oneDNN has
/// AMX (onednn_amx()), in place otherwise.
AttentionHeads attention_heads_for(torch::ScalarType type);

/// Whether attention() runs for this qkv: CPU, fp32 or bf16, oneDNN built in, not tracing.
bool fused_attention(const torch::Tensor& qkv);

/// qkv [B, N, 3 * H * hd] -> [B, N, H * hd] in qkv's dtype: per head softmax(q k^T * scale) v.
/// Throws where !fused_attention(qkv).
torch::Tensor attention(const torch::Tensor& qkv, int64_t num_heads, double scale,
                        AttentionHeads layout = AttentionHeads::automatic);

}  // namespace moejet::kernels
