#pragma once
// Small building blocks shared by the backbones, named and behaving as timm's layers: the token
// MLP (fc1 -> GELU -> fc2), stochastic depth (DropPath) and LayerScale. FeedForward is the
// interface a block's "mlp" slot accepts, so an MoE layer can replace the dense MLP of any block
// while the block and its state-dict keys stay the same.

#include <functional>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace moejet::models {

/// The per-token feed-forward slot of a transformer block: [B, N, D] -> [B, N, D].
class FeedForward : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// Multiply-accumulates per image for `tokens` tokens (analytic FLOP count).
  virtual double macs(int64_t tokens) const = 0;
};

/// timm's Mlp: fc1 -> GELU (exact erf) -> drop -> fc2 -> drop.
class Mlp : public FeedForward {
 public:
  Mlp(int64_t dim, int64_t hidden, double drop = 0.0);
  torch::Tensor forward(const torch::Tensor& x) override;
  double macs(int64_t tokens) const override;

  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
  double drop;
  /// Observer of the hidden activations after GELU ([..., hidden], before dropout), like a torch
  /// forward hook on timm's mlp.act: checkpoint recycling gathers unit statistics through it.
  std::function<void(const torch::Tensor&)> on_hidden;
  /// Observer of the MLP's input (the block's norm2 output, [..., dim]): the residual-stream
  /// channel statistics that recycling from a wider checkpoint selects channels by.
  std::function<void(const torch::Tensor&)> on_input;
};

/// Stochastic depth per sample: zeroes a sample's residual branch with probability p in training
/// and rescales the rest by 1 / (1 - p).
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

/// Inverted dropout, as torch's: zeroes each element with probability p in training and scales
/// the rest by 1 / (1 - p). On the CPU (float or double) one fused kernel draws the mask from a
/// counter-based generator seeded by torch's default generator (so torch::manual_seed makes it
/// reproducible, whatever the thread count), keeps it as bytes for the backward, and applies it
/// in the same pass (p is rounded to a multiple of 2^-32). SpheroMoE's expert dropout draws
/// millions of mask bits per step; libtorch 1.13's serial Mersenne-Twister draws cost more than
/// the expert GEMMs around them.
torch::Tensor dropout(const torch::Tensor& x, double p, bool training);

/// timm's LayerScale: x * gamma, gamma [D] initialised to `init_values`.
class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, double init_values);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor gamma;
};
TORCH_MODULE(LayerScale);

/// timm's trunc_normal_(std, a=-2, b=2): truncated at +-2 absolute, as timm's ViT init does.
void trunc_normal_(torch::Tensor& t, double std);

}  // namespace moejet::models
