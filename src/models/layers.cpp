#include "moejet/models/layers.h"

#include <torch/torch.h>

namespace moejet::models {

Mlp::Mlp(int64_t dim, int64_t hidden, double drop) : drop(drop) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor Mlp::forward(const torch::Tensor& x) {
  if (on_input) {
    on_input(x);
  }
  auto h = torch::gelu(fc1(x));
  if (on_hidden) {
    on_hidden(h);
  }
  h = models::dropout(h, drop, is_training());
  return models::dropout(fc2(h), drop, is_training());
}

double Mlp::macs(int64_t tokens) const {
  return 2.0 * static_cast<double>(tokens) * static_cast<double>(fc1->weight.size(0)) *
         static_cast<double>(fc1->weight.size(1));
}

torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (p <= 0.0 || !training) {
    return x;
  }
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto keep = torch::empty(shape, x.options()).bernoulli_(1.0 - p);
  return x * keep.div_(1.0 - p);
}

LayerScaleImpl::LayerScaleImpl(int64_t dim, double init_values) {
  gamma = register_parameter("gamma", torch::full({dim}, init_values));
}

torch::Tensor LayerScaleImpl::forward(const torch::Tensor& x) {
  return x * gamma;
}

void trunc_normal_(torch::Tensor& t, double std) {
  torch::NoGradGuard guard;
  // timm truncates at +-2 in absolute units. For the std it is called with (<= 0.02) that is
  // beyond 100 sigma, so a clamped normal draw has the same distribution as inverse-CDF
  // truncation, without erfinv (which made building a 265 M-parameter MoE take seconds).
  if (std * 4 < 2.0) {
    t.normal_(0.0, std).clamp_(-2.0, 2.0);
    return;
  }
  double a = -2.0, b = 2.0;
  auto norm_cdf = [](double x) { return (1. + std::erf(x / std::sqrt(2.))) / 2.; };
  double l = norm_cdf(a / std), u = norm_cdf(b / std);
  t.uniform_(2 * l - 1, 2 * u - 1);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.));
  t.clamp_(a, b);
}

}  // namespace moejet::models
