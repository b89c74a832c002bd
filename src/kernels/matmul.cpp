#include "moejet/kernels/matmul.h"

#include <torch/torch.h>

#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/tracing.h"

namespace moejet::kernels {

namespace {

// bf16 operands (a ProductOut::compute result) stay bf16 products whatever the scope.
bool use_bf16(const torch::Tensor& x) {
  return x.scalar_type() == torch::kBFloat16 || (gemm_precision() == Precision::bf16 && x.is_floating_point());
}

torch::Tensor plain_or_copy(const torch::Tensor& t) {
  return plain_matrix(t) ? t : t.contiguous();
}

// oneDNN's fp32 matmul in both directions. Autograd's own mm backward would run ATen's GEMMs
// (OpenBLAS), which are the slower kernel this dispatch exists to avoid. Two Functions, with and
// without a bias, because autograd takes no undefined tensor as an input.
torch::Tensor linear_forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                             const torch::Tensor& bias) {
  auto x2 = plain_or_copy(x.reshape({-1, x.size(-1)}));
  ctx->save_for_backward({x2, weight});
  ctx->saved_data["x_sizes"] = x.sizes().vec();
  auto y = onednn_matmul(x2, weight.t(), bias);
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y.view(sizes);
}

// Gradients of x, weight and (with_bias) bias.
torch::autograd::variable_list linear_backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad,
                                               bool with_bias) {
  auto saved = ctx->get_saved_variables();
  const auto& x2 = saved[0];
  const auto& weight = saved[1];
  auto gy = plain_or_copy(grad.reshape({-1, weight.size(0)}));
  torch::autograd::variable_list out(with_bias ? 3 : 2);
  if (ctx->needs_input_grad(0)) {
    out[0] = onednn_matmul(gy, weight).view(ctx->saved_data["x_sizes"].toIntVector());
  }
  if (ctx->needs_input_grad(1)) {
    out[1] = onednn_matmul(gy.t(), x2);
  }
  if (with_bias && ctx->needs_input_grad(2)) {
    out[2] = gy.sum(0);
  }
  return out;
}

struct OnednnLinearFn : torch::autograd::Function<OnednnLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    return linear_forward(ctx, x, weight, bias);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return linear_backward(ctx, grads[0], true);
  }
};

struct OnednnLinearNoBiasFn : torch::autograd::Function<OnednnLinearNoBiasFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight) {
    return linear_forward(ctx, x, weight, torch::Tensor());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return linear_backward(ctx, grads[0], false);
  }
};

struct OnednnMatmulFn : torch::autograd::Function<OnednnMatmulFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return onednn_matmul(a, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto g = plain_or_copy(grads[0]);
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) {
      ga = onednn_matmul(g, saved[1].transpose(-2, -1));
    }
    if (ctx->needs_input_grad(1)) {
      gb = onednn_matmul(saved[0].transpose(-2, -1), g);
    }
    return {ga, gb};
  }
};

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, ProductOut out) {
  if (tracing()) {
    return torch::linear(x, weight, bias);
  }
  if (use_bf16(x)) {
    auto y = torch::linear(to_bf16(x), to_bf16(weight), to_bf16(bias));
    return out == ProductOut::compute ? y : to_fp32(y);
  }
  if (x.dim() >= 1 && x.numel() > 0 && x.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat &&
      onednn_matmul_supports(x.reshape({-1, x.size(-1)}), weight.t())) {
    return bias.defined() ? OnednnLinearFn::apply(x, weight, bias) : OnednnLinearNoBiasFn::apply(x, weight);
  }
  return torch::linear(x, weight, bias);
}

torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b, ProductOut out) {
  if (tracing()) {
    return torch::matmul(a, b);
  }
  if (a.dim() > 2 && b.dim() == 2) {  // [..., M, K] x [K, N]: one GEMM over all rows
    auto sizes = a.sizes().vec();
    sizes.back() = b.size(1);
    return kernels::matmul(a.reshape({-1, a.size(-1)}), b, out).view(sizes);
  }
  if (use_bf16(a)) {
    auto y = torch::matmul(to_bf16(a), to_bf16(b));
    return out == ProductOut::compute ? y : to_fp32(y);
  }
  if (a.scalar_type() == torch::kFloat && a.dim() >= 2 && b.dim() >= 2) {
    const auto pa = plain_or_copy(a), pb = plain_or_copy(b);
    if (onednn_matmul_supports(pa, pb)) {
      return OnednnMatmulFn::apply(pa, pb);
    }
  }
  return torch::matmul(a, b);
}

torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     torch::IntArrayRef stride, torch::IntArrayRef padding, int64_t groups) {
  if (use_bf16(x) && !tracing()) {
    return to_fp32(torch::conv2d(to_bf16(x), to_bf16(weight), to_bf16(bias), stride, padding, 1, groups));
  }
  return torch::conv2d(x, weight, bias, stride, padding, 1, groups);
}

std::string gemm_kernel(const c10::Device& device, Precision p) {
  if (device.is_cuda()) {
    return "cuBLAS " + to_string(p);
  }
  if (p == Precision::bf16) {
    return "oneDNN bf16 (ATen)";
  }
  if (onednn_available()) {
    const auto a = torch::empty({256, 256}), b = torch::empty({256, 256});
    return "oneDNN fp32 (" + onednn_matmul_impl(a, b) + ")";
  }
  return "BLAS fp32 (ATen)";
}

}  // namespace moejet::kernels
