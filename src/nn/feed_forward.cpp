#include "moejet/nn/feed_forward.h"

#include <torch/torch.h>

#include "moejet/kernels/gelu.h"
#include "moejet/nn/dropout.h"
#include "moejet/nn/products.h"

namespace moejet::nn {

Mlp::Mlp(int64_t dim, int64_t hidden, double drop) : drop(drop) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor Mlp::forward(const torch::Tensor& x) {
  if (on_input) {
    on_input(x);
  }
  // GELU computes in fp32 inside; its output only feeds fc2 (kernels::ProductOut).
  auto pre = linear(*fc1, x, kernels::ProductOut::compute);
  if (!on_hidden && (drop == 0 || !is_training()) && kernels::fused_gelu_linear(pre, fc2->weight, fc2->bias)) {
    return kernels::gelu_linear(pre, fc2->weight, fc2->bias);
  }
  auto h = kernels::gelu(pre);
  if (on_hidden) {
    on_hidden(h);
  }
  h = nn::dropout(h, drop, is_training());
  return nn::dropout(linear(*fc2, h), drop, is_training());
}

double Mlp::macs(int64_t tokens) const {
  return 2.0 * static_cast<double>(tokens) * static_cast<double>(fc1->weight.size(0)) *
         static_cast<double>(fc1->weight.size(1));
}

}  // namespace moejet::nn
