#pragma once
// torch::nn::Linear and Conv2d layers run through moejet's product dispatch (kernels/matmul.h)
// instead of their own forward, so that they take the fastest kernel and this thread's precision
// while keeping their modules, and with them timm's parameter names and libtorch's initialisers.

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "moejet/kernels/matmul.h"

namespace moejet::nn {

torch::Tensor linear(const torch::nn::LinearImpl& m, const torch::Tensor& x,
                     kernels::ProductOut out = kernels::ProductOut::fp32);
torch::Tensor conv2d(const torch::nn::Conv2dImpl& m, const torch::Tensor& x);

}  // namespace moejet::nn
