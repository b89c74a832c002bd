#pragma once
// timm's LayerScale (CaiT): a learnt per-channel scale on a residual branch, whose parameter is
// `gamma` as in timm's state dicts.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace moejet::nn {

/// timm's LayerScale: x * gamma, gamma [D] initialised to `init_values`.
class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, double init_values);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor gamma;
};
TORCH_MODULE(LayerScale);

}  // namespace moejet::nn
