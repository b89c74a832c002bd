#include "moejet/moe/expert_mlp.h"

#include <cmath>

#include <torch/torch.h>

#include "moejet/models/layers.h"

namespace moejet::moe {

namespace F = torch::nn::functional;

namespace {

// Holds one batched linear layer's tensors so that they are named "<name>.weight"/"<name>.bias".
struct BatchedLinearParams : torch::nn::Module {
  BatchedLinearParams(int64_t e, int64_t out, int64_t in) {
    weight = register_parameter("weight", torch::empty({e, out, in}));
    bias = register_parameter("bias", torch::zeros({e, out}));
  }
  torch::Tensor weight, bias;
};

}  // namespace

ExpertMlpImpl::ExpertMlpImpl(int64_t num_experts, int64_t dim, int64_t hidden, double drop)
    : num_experts(num_experts), dim(dim), hidden(hidden), drop(drop) {
  TORCH_CHECK(num_experts > 0 && dim > 0 && hidden > 0, "ExpertMlp: invalid sizes E=", num_experts,
              " D=", dim, " H=", hidden);
  auto fc1 = register_module("fc1", std::make_shared<BatchedLinearParams>(num_experts, hidden, dim));
  auto fc2 = register_module("fc2", std::make_shared<BatchedLinearParams>(num_experts, dim, hidden));
  fc1_weight = fc1->weight;
  fc1_bias = fc1->bias;
  fc2_weight = fc2->weight;
  fc2_bias = fc2->bias;
  // Same init as the dense ViT's Linear layers (timm: trunc-normal .02, zero bias).
  models::trunc_normal_(fc1_weight, 0.02);
  models::trunc_normal_(fc2_weight, 0.02);
}

torch::Tensor ExpertMlpImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(0) == num_experts && x.size(2) == dim,
              "ExpertMlp: expected [", num_experts, ", T, ", dim, "], got ", x.sizes());
  // baddbmm fuses the bias add into the batched GEMM: [E,T,D] x [E,D,H] -> [E,T,H].
  auto h = torch::baddbmm(fc1_bias.unsqueeze(1), x, fc1_weight.transpose(1, 2));
  h = torch::gelu(h);
  if (drop > 0) {
    h = F::dropout(h, F::DropoutFuncOptions().p(drop).training(is_training()));
  }
  auto y = torch::baddbmm(fc2_bias.unsqueeze(1), h, fc2_weight.transpose(1, 2));
  if (drop > 0) {
    y = F::dropout(y, F::DropoutFuncOptions().p(drop).training(is_training()));
  }
  return y;
}

double ExpertMlpImpl::macs(double tokens_per_expert) const {
  return 2.0 * tokens_per_expert * static_cast<double>(num_experts) * static_cast<double>(dim) *
         static_cast<double>(hidden);
}

}  // namespace moejet::moe
