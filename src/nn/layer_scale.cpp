#include "moejet/nn/layer_scale.h"

#include <torch/torch.h>

namespace moejet::nn {

LayerScaleImpl::LayerScaleImpl(int64_t dim, double init_values) {
  gamma = register_parameter("gamma", torch::full({dim}, init_values));
}

torch::Tensor LayerScaleImpl::forward(const torch::Tensor& x) {
  return x * gamma;
}

}  // namespace moejet::nn
