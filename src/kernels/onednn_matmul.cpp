#include "moejet/kernels/onednn_matmul.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>

#ifdef MOEJET_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace moejet::kernels {

bool plain_matrix(const torch::Tensor& t) {
  const int64_t r = t.size(-2), c = t.size(-1);
  return (t.stride(-1) == 1 || c == 1) || (t.stride(-2) == 1 || r == 1);
}

bool onednn_available() {
#ifdef MOEJET_HAVE_ONEDNN
  static const bool on = [] {
    const char* v = std::getenv("MOEJET_ONEDNN");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
#else
  return false;
#endif
}

bool onednn_amx() {
#ifdef MOEJET_HAVE_ONEDNN
  static const bool amx = [] {
    if (!onednn_available()) {
      return false;
    }
    // The ISA enum is a set of bits, each ISA's value a superset of those it extends.
    const auto bits = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);
    return (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & bits) == bits;
  }();
  return amx;
#else
  return false;
#endif
}

bool onednn_matmul_shapes(const torch::Tensor& a, const torch::Tensor& b) {
  if (!onednn_available() || !a.defined() || !b.defined() || !a.is_cpu() || !b.is_cpu()) {
    return false;
  }
  if (a.dim() < 2 || a.dim() > 4 || b.dim() != a.dim() || a.size(-1) != b.size(-2) || a.numel() == 0 ||
      b.numel() == 0) {
    return false;
  }
  for (int64_t d = 0; d + 2 < a.dim(); ++d) {
    if (a.size(d) != b.size(d)) {
      return false;
    }
  }
  return true;
}

bool onednn_matmul_supports(const torch::Tensor& a, const torch::Tensor& b) {
  if (!onednn_matmul_shapes(a, b)) {
    return false;
  }
  const auto t = a.scalar_type();
  if ((t != torch::kFloat && t != torch::kBFloat16) || b.scalar_type() != t) {
    return false;
  }
  return plain_matrix(a) && plain_matrix(b);
}

#ifdef MOEJET_HAVE_ONEDNN
namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::memory::desc describe(const torch::Tensor& t) {
  const dnnl::memory::dims dims(t.sizes().begin(), t.sizes().end());
  dnnl::memory::dims strides(t.strides().begin(), t.strides().end());
  // oneDNN checks strides even of size-1 dims; give them the dense value.
  for (int64_t d = t.dim() - 1, dense = 1; d >= 0; --d) {
    if (t.size(d) == 1) {
      strides[d] = dense;
    }
    dense = std::max<int64_t>(dense, strides[d] * t.size(d));
  }
  const auto type = t.scalar_type() == torch::kBFloat16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  return dnnl::memory::desc(dims, type, strides);
}

dnnl::matmul::primitive_desc matmul_desc(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias,
                                         const torch::Tensor& out, float alpha = 1.0f, const torch::Tensor& mul = {}) {
  // oneDNN keeps its own cache of primitives keyed by these descriptors, so a repeated shape
  // costs a lookup, not a JIT compilation.
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) {
    attr.set_output_scales(0, {alpha});
  }
  if (mul.defined()) {
    dnnl::post_ops ops;
    ops.append_binary(dnnl::algorithm::binary_mul, describe(mul));
    attr.set_post_ops(ops);
  }
  if (bias.defined()) {
    dnnl::memory::dims bias_dims(static_cast<size_t>(out.dim()), 1);
    bias_dims.back() = out.size(-1);
    dnnl::memory::dims bias_strides(bias_dims.size(), out.size(-1));
    bias_strides.back() = 1;
    return dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(describe(a), describe(b),
                           dnnl::memory::desc(bias_dims, dnnl::memory::data_type::f32, bias_strides), describe(out)),
        attr, cpu_engine());
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(describe(a), describe(b), describe(out)), attr, cpu_engine());
}

}  // namespace
#endif

void onednn_matmul_out(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias,
                       const torch::Tensor& out, double alpha, const torch::Tensor& mul) {
  TORCH_CHECK(onednn_matmul_supports(a, b), "onednn_matmul: unsupported operands ", a.sizes(), " ", a.dtype(), " x ",
              b.sizes(), " ", b.dtype());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == b.size(-1) && bias.is_cpu()),
              "onednn_matmul: expected bias [", b.size(-1), "], got ", bias.sizes());
  TORCH_CHECK(!bias.defined() || (alpha == 1.0 && !mul.defined()),
              "onednn_matmul: a scale or a multiplier with a bias is not supported");
  auto sizes = a.sizes().vec();
  sizes.back() = b.size(-1);
  TORCH_CHECK(out.sizes() == c10::IntArrayRef(sizes) &&
                  (out.scalar_type() == torch::kFloat || out.scalar_type() == torch::kBFloat16) && out.is_cpu() &&
                  plain_matrix(out),
              "onednn_matmul: expected an fp32 or bf16 out ", c10::IntArrayRef(sizes),
              " whose matrices are row- or column-major, got ", out.sizes(), " ", out.dtype(), " strides ",
              out.strides());
  TORCH_CHECK(!mul.defined() ||
                  (mul.sizes() == out.sizes() && mul.is_cpu() &&
                   (mul.scalar_type() == torch::kFloat || mul.scalar_type() == torch::kBFloat16) && plain_matrix(mul)),
              "onednn_matmul: expected a multiplier like out ", out.sizes(), ", got ",
              mul.defined() ? mul.sizes() : c10::IntArrayRef{});
#ifdef MOEJET_HAVE_ONEDNN
  // All operands, so that observers (kernels/product_floor.h) can replay the product as it ran.
  RECORD_FUNCTION("moejet::onednn_matmul", std::vector<c10::IValue>({a, b, out, bias, mul, alpha}));
  const auto fbias = bias.defined() ? bias.to(torch::kFloat).contiguous() : bias;
  const auto pd = matmul_desc(a, b, fbias, out, static_cast<float>(alpha), mul);
  if (std::strncmp(pd.impl_info_str(), "ref", 3) == 0) {
    // oneDNN's reference kernel is orders of magnitude slower than any BLAS: ATen's product.
    auto r = torch::matmul(a.to(torch::kFloat), b.to(torch::kFloat));
    if (alpha != 1.0) {
      r.mul_(alpha);
    }
    if (mul.defined()) {
      r.mul_(mul.to(torch::kFloat));
    }
    out.copy_(fbias.defined() ? r.add_(fbias) : r);
    return;
  }
  auto& eng = cpu_engine();
  dnnl::memory ma(pd.src_desc(), eng, a.data_ptr()), mb(pd.weights_desc(), eng, b.data_ptr()),
      mc(pd.dst_desc(), eng, out.data_ptr());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (fbias.defined()) {
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(pd.bias_desc(), eng, fbias.data_ptr()));
  }
  if (mul.defined()) {
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, dnnl::memory(describe(mul), eng, mul.data_ptr()));
  }
  dnnl::stream stream(eng);
  dnnl::matmul(pd).execute(stream, args);
  stream.wait();
#else
  (void)alpha, (void)mul;
#endif
}

torch::Tensor onednn_matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  TORCH_CHECK(onednn_matmul_supports(a, b), "onednn_matmul: unsupported operands ", a.sizes(), " ", a.dtype(), " x ",
              b.sizes(), " ", b.dtype());
  auto sizes = a.sizes().vec();
  sizes.back() = b.size(-1);
  auto out = torch::empty(sizes, a.options().dtype(torch::kFloat));
  onednn_matmul_out(a, b, bias, out);
  return out;
}

std::string onednn_matmul_impl(const torch::Tensor& a, const torch::Tensor& b) {
#ifdef MOEJET_HAVE_ONEDNN
  if (!onednn_matmul_supports(a, b)) {
    return "";
  }
  auto sizes = a.sizes().vec();
  sizes.back() = b.size(-1);
  const auto out = torch::empty(sizes, a.options().dtype(torch::kFloat));
  return matmul_desc(a, b, torch::Tensor(), out).impl_info_str();
#else
  return "";
#endif
}

}  // namespace moejet::kernels
