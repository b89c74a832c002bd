#include "moejet/nn/products.h"

#include <torch/torch.h>

#include <variant>

#include "moejet/kernels/matmul.h"

namespace moejet::nn {

torch::Tensor linear(const torch::nn::LinearImpl& m, const torch::Tensor& x, kernels::ProductOut out) {
  return kernels::linear(x, m.weight, m.bias, out);
}

torch::Tensor conv2d(const torch::nn::Conv2dImpl& m, const torch::Tensor& x) {
  const auto& o = m.options;
  // libtorch 1.13 keeps these options in c10::variant, 2.x in std::variant: found by ADL.
  using std::get_if;
  using std::holds_alternative;
  const auto* padding = get_if<torch::ExpandingArray<2>>(&o.padding());
  const auto& dilation = *o.dilation();
  if (padding == nullptr || !holds_alternative<torch::enumtype::kZeros>(o.padding_mode()) || dilation[0] != 1 ||
      dilation[1] != 1) {
    return const_cast<torch::nn::Conv2dImpl&>(m).forward(x);  // "same"/"valid", other padding modes, dilation
  }
  return kernels::conv2d(x, m.weight, m.bias, *o.stride(), **padding, o.groups());
}

}  // namespace moejet::nn
