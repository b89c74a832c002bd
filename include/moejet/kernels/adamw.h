#pragma once
// The element loop of FusedAdamW, in a translation unit of its own with no torch headers: it is
// compiled with -fno-math-errno so that the compiler may vectorise sqrt (a scalar sqrt and divide
// per element made the update of a 265 M-parameter SpheroMoE ViT-T compute-bound at half the
// memory bandwidth). It uses nothing of errno.

#include <cstdint>

namespace moejet::kernels {

struct AdamWCoefficients {
  float decay;         ///< 1 - lr * weight_decay
  float beta1, beta2;  ///< moment decay rates
  float one_minus_beta1, one_minus_beta2;
  float inv_sqrt_bias_correction2;  ///< 1 / sqrt(1 - beta2^step)
  float eps;
  float step_size;  ///< lr / (1 - beta1^step)
};

/// For i in [begin, end): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// p = p * decay - step_size * m / (sqrt(v) / sqrt(bc2) + eps). torch::optim::AdamW's maths.
/// With p_bf16, also p_bf16 = p rounded to bf16 as kernels::to_bf16 rounds it (a parameter's copy
/// for bf16 products, kernels/bf16_weights.h), written while p is at hand.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end, const AdamWCoefficients& c,
                  uint16_t* p_bf16 = nullptr);

}  // namespace moejet::kernels
