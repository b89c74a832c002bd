#pragma once
// The feed-forward slot of a transformer block and its dense filling, timm's Mlp. FeedForward is
// the interface a block's "mlp" slot accepts, so an MoE layer can replace the dense MLP of any
// block while the block and its state-dict keys stay the same.

#include <functional>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace moejet::nn {

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

}  // namespace moejet::nn
