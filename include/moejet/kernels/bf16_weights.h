#pragma once
// bf16 copies of fp32 parameters, kept until the parameter changes. Under bf16 products every
// forward casts each weight it multiplies by (kernels/bf16_cast.h). In training that is one cast
// a step, which is needed: the optimizer changed the weights. In evaluation it is one cast a
// batch of weights that do not change: for the main job's MoE models, whose expert weights
// outnumber the rest, keeping the copy made evaluation 5-15% faster (batch 128, one thread). The copy is found again by
// the parameter's identity, and is used only while the parameter's data pointer and version
// counter (bumped by every in-place write: ATen's, and moejet's fused optimizer's) are those it
// was made from; otherwise it is made again, in place when nobody else holds it. The fused AdamW
// writes the copy as it updates the weights, so that training converts nothing either, and reads
// each weight once a step instead of twice. A copy lives as long as its parameter, and is dropped
// at the next miss after the parameter is freed.

#include <cstddef>
#include <cstdint>

#include <torch/types.h>

namespace moejet::kernels {

/// w as bf16, not differentiable (for the inside of an autograd Function's forward). A CPU fp32
/// contiguous leaf that requires grad (a parameter) is converted once per version; anything else
/// is converted every call, as to_bf16.
torch::Tensor bf16_weight(const torch::Tensor& w);

/// For an optimizer about to write parameter p through its pointer (moejet's fused AdamW): where
/// to write p's new values rounded to bf16 as well (p.numel() of them, contiguous; rounded as
/// kernels::adamw_update rounds them), or nullptr when there is no copy to keep: none made yet, or
/// one still held by a graph.
/// After writing both and bumping p's version, call bf16_weight_written(p). Not to be called while
/// another thread multiplies by p.
uint16_t* bf16_weight_to_write(const torch::Tensor& p);
void bf16_weight_written(const torch::Tensor& p);

/// How many copies are kept, and their bytes (for tests and memory reports).
struct Bf16WeightCacheStats {
  size_t copies = 0;
  size_t bytes = 0;
  size_t conversions = 0;  ///< since the process started: every miss
};
Bf16WeightCacheStats bf16_weight_cache_stats();

/// Drops every copy (their memory goes back once nobody else holds them).
void clear_bf16_weights();

}  // namespace moejet::kernels
