#pragma once
// Row-wise ops of soft routing along the last dim: L2 normalisation (SpheroMoE's keys, Soft MoE's
// normalised inputs) and the dispatch softmax. libtorch runs them as several single-threaded
// passes (normalize: norm, clamp, expand, divide, and as many backward); on the CPU in float
// each is one pass per row, split over the cores, forward and backward. On a SpheroMoE layer of
// V-JetMoE-T at batch 32 ([32, 196, 192] keys, [32, 294, 196] dispatch) forward + backward went
// from 2.8 to ~0.6 ms and from 2.1 to ~1 ms. Other devices and dtypes use the torch ops.

#include <torch/types.h>

namespace moejet::kernels {

/// x / max(||x||_2, eps) along the last dim (torch::nn::functional::normalize), or with
/// `additive`, x / (||x||_2 + eps) (the MoE Jetpack authors' l2norm). The two agree to a relative
/// eps/||x|| and differ only for rows of near-zero norm.
torch::Tensor l2_normalize(const torch::Tensor& x, double eps, bool additive = false);

/// torch::softmax(x, -1).
torch::Tensor row_softmax(const torch::Tensor& x);

}  // namespace moejet::kernels
