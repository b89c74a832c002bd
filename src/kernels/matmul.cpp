#include "moejet/kernels/matmul.h"

#include <torch/torch.h>

#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/bf16_weights.h"
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

// A Linear layer's three products on oneDNN. In fp32, autograd's own mm backward would run
// ATen's GEMMs (OpenBLAS), the slower kernel this dispatch exists to avoid. In bf16, ATen's addmm
// first writes the broadcast bias into its output and the product then accumulates onto it: a
// pass over every output that `moejet bench --floor` measured at 1.4-2.8x the product's own time
// in a ViT-T step; here oneDNN adds the fp32 bias inside the product, and the weight's gradient
// comes out of its product in fp32, not rounded to bf16 and cast back as autocast's does.
// `compute`: bf16 products, and a bf16 result (ProductOut::compute). Two Functions, with and
// without a bias, because autograd takes no undefined tensor as an input.
torch::Tensor linear_forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                             const torch::Tensor& bias, bool bf16, bool compute) {
  auto x2 = plain_or_copy((bf16 ? to_bf16(x) : x).reshape({-1, x.size(-1)}));
  const auto w = bf16 ? bf16_weight(weight) : weight;
  ctx->save_for_backward({x2, w});
  ctx->saved_data["x_sizes"] = x.sizes().vec();
  ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  auto y =
      torch::empty({x2.size(0), weight.size(0)}, x.options().dtype(bf16 && compute ? torch::kBFloat16 : torch::kFloat));
  onednn_matmul_out(x2, w.t(), bias, y);
  return y.view(sizes);
}

// Gradients of x (in x's dtype), weight and (with_bias) bias, the latter two in fp32.
torch::autograd::variable_list linear_backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad,
                                               bool with_bias) {
  auto saved = ctx->get_saved_variables();
  const auto& x2 = saved[0];
  const auto& w = saved[1];
  const bool bf16 = w.scalar_type() == torch::kBFloat16;
  auto g = grad.reshape({-1, w.size(0)});
  auto gy = plain_or_copy(bf16 ? to_bf16(g) : g);
  torch::autograd::variable_list out(with_bias ? 3 : 2);
  if (ctx->needs_input_grad(0)) {
    const auto x_type = static_cast<torch::ScalarType>(ctx->saved_data["x_type"].toInt());
    auto gx = torch::empty({gy.size(0), w.size(1)}, gy.options().dtype(x_type));
    onednn_matmul_out(gy, w, {}, gx);
    out[0] = gx.view(ctx->saved_data["x_sizes"].toIntVector());
  }
  if (ctx->needs_input_grad(1)) {
    out[1] = onednn_matmul(gy.t(), x2);
  }
  if (with_bias && ctx->needs_input_grad(2)) {
    out[2] = sum_fp32(g, 0);
  }
  return out;
}

struct OnednnLinearFn : torch::autograd::Function<OnednnLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, bool bf16, bool compute) {
    return linear_forward(ctx, x, weight, bias, bf16, compute);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto out = linear_backward(ctx, grads[0], true);
    out.resize(5);  // none for the flags
    return out;
  }
};

struct OnednnLinearNoBiasFn : torch::autograd::Function<OnednnLinearNoBiasFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, bool bf16, bool compute) {
    return linear_forward(ctx, x, weight, torch::Tensor(), bf16, compute);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto out = linear_backward(ctx, grads[0], false);
    out.resize(4);
    return out;
  }
};

// a x b on oneDNN, forward and backward. In bf16 the operands are rounded inside (saved rounded,
// for the backward's products), the result comes back fp32 (bf16 for ProductOut::compute) and the
// gradients in their inputs' dtypes, straight from the products: ATen's bf16 matmul rounds its
// result to bf16 and autograd's casts then convert it and both gradients back to fp32.
struct OnednnMatmulFn : torch::autograd::Function<OnednnMatmulFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b,
                               bool bf16, bool compute) {
    const auto as = plain_or_copy(bf16 ? to_bf16(a) : a), bs = plain_or_copy(bf16 ? to_bf16(b) : b);
    ctx->save_for_backward({as, bs});
    ctx->saved_data["a_type"] = static_cast<int64_t>(a.scalar_type());
    ctx->saved_data["b_type"] = static_cast<int64_t>(b.scalar_type());
    auto sizes = as.sizes().vec();
    sizes.back() = bs.size(-1);
    auto out = torch::empty(sizes, as.options().dtype(bf16 && compute ? torch::kBFloat16 : torch::kFloat));
    onednn_matmul_out(as, bs, {}, out);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& as = saved[0];
    const auto& bs = saved[1];
    auto g = plain_or_copy(grads[0].to(as.scalar_type()));
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) {
      ga = torch::empty(as.sizes(),
                        as.options().dtype(static_cast<torch::ScalarType>(ctx->saved_data["a_type"].toInt())));
      onednn_matmul_out(g, bs.transpose(-2, -1), {}, ga);
    }
    if (ctx->needs_input_grad(1)) {
      gb = torch::empty(bs.sizes(),
                        bs.options().dtype(static_cast<torch::ScalarType>(ctx->saved_data["b_type"].toInt())));
      onednn_matmul_out(as.transpose(-2, -1), g, {}, gb);
    }
    return {ga, gb, torch::Tensor(), torch::Tensor()};
  }
};

// What onednn_matmul_supports asks of the operands once OnednnMatmulFn has rounded them (bf16) and
// copied a matrix that is neither row- nor column-major.
bool onednn_matmul_takes(const torch::Tensor& a, const torch::Tensor& b, bool bf16) {
  const auto fp = [&](const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat || (bf16 && t.scalar_type() == torch::kBFloat16);
  };
  return onednn_matmul_shapes(a, b) && fp(a) && fp(b);
}

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, ProductOut out) {
  if (tracing()) {
    return torch::linear(x, weight, bias);
  }
  const bool bf16 = use_bf16(x);
  // What onednn_matmul_supports asks of the operands as linear_forward hands them over.
  if (onednn_available() && x.is_cpu() && weight.is_cpu() && x.dim() >= 1 && x.numel() > 0 && weight.dim() == 2 &&
      weight.numel() > 0 && x.size(-1) == weight.size(1) && plain_matrix(weight) &&
      weight.scalar_type() == torch::kFloat &&
      (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16) &&
      (!bias.defined() || (bias.is_cpu() && bias.scalar_type() == torch::kFloat))) {
    const bool compute = out == ProductOut::compute;
    return bias.defined() ? OnednnLinearFn::apply(x, weight, bias, bf16, compute)
                          : OnednnLinearNoBiasFn::apply(x, weight, bf16, compute);
  }
  if (bf16) {
    auto y = torch::linear(to_bf16(x), to_bf16(weight), to_bf16(bias));
    return out == ProductOut::compute ? y : to_fp32(y);
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
  const bool bf16 = use_bf16(a);
  if (onednn_matmul_takes(a, b, bf16)) {
    return OnednnMatmulFn::apply(a, b, bf16, out == ProductOut::compute);
  }
  if (bf16) {
    auto y = torch::matmul(to_bf16(a), to_bf16(b));
    return out == ProductOut::compute ? y : to_fp32(y);
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
  if (onednn_available()) {
    const auto type = p == Precision::bf16 ? torch::kBFloat16 : torch::kFloat;
    const auto a = torch::empty({256, 256}, type), b = torch::empty({256, 256}, type);
    return "oneDNN " + to_string(p) + " (" + onednn_matmul_impl(a, b) + ")";
  }
  return p == Precision::bf16 ? "oneDNN bf16 (ATen)" : "BLAS fp32 (ATen)";
}

}  // namespace moejet::kernels
