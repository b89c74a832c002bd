#include "moejet/nn/dropout.h"

#include <torch/torch.h>

#include "moejet/kernels/dropout.h"

namespace moejet::nn {

torch::Tensor dropout(const torch::Tensor& x, double p, bool training) {
  if (p <= 0.0 || !training) {
    return x;
  }
  TORCH_CHECK(p < 1.0, "dropout: p must be in [0, 1), got ", p);
  if (x.is_cpu() &&
      (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble || x.scalar_type() == torch::kBFloat16)) {
    return kernels::fused_dropout(x, p);
  }
  auto mask = torch::rand_like(x).ge_(p).mul_(1.0 / (1.0 - p));
  return x * mask;
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

}  // namespace moejet::nn
