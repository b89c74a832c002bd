#pragma once
// Mobile V-MoE's per-image router: one routing decision per image, shared by every MoE block
// after it. The router reads the image representation where the dense blocks end (mean of the
// patch tokens, or the class token when the model pools with it), normalises it with its own
// LayerNorm and scores the E experts with a linear layer; each image goes to its k best experts
// (stable sort: ties go to the lower index), weighted by their softmax gates (V-MoE: no
// renormalisation, so the classification loss also trains the router end to end). The router's
// logits are what the super-class cross-entropy supervises. For end-to-end routing without
// super-classes, a Switch-style balance loss over images (E * sum_e f_e * P_e) is available.

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace moejet::moe {

struct ImageRouting {
  torch::Tensor logits;    ///< [B, E] router logits (super-class scores)
  torch::Tensor experts;   ///< [B, k] int64, chosen experts, best first
  torch::Tensor weights;   ///< [B, k] their gates (carry the gradient)
  torch::Tensor aux_loss;  ///< scalar balance loss, already weighted (0 when its weight is 0)
};

struct ImageRouterOptions {
  int64_t dim = 0;
  int64_t num_experts = 10;
  int64_t k = 1;
  int64_t prefix_tokens = 0;  ///< tokens before the patches (class token)
  bool pool_class_token = false;
  double noise_std = 0.0;  ///< Gaussian noise on the logits in training (exploration)
  double balance_loss_weight = 0.0;
};

class ImageRouterImpl : public torch::nn::Module {
 public:
  explicit ImageRouterImpl(const ImageRouterOptions& options);
  /// tokens [B, T, D] -> routing of each image.
  ImageRouting forward(const torch::Tensor& tokens);

  ImageRouterOptions options;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ImageRouter);

}  // namespace moejet::moe
