#include <gtest/gtest.h>

#include <torch/torch.h>
#include <cmath>

#include "moejet/core/error.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/expert_bmm.h"
#include "moejet/kernels/matmul.h"
#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/precision.h"
#include "test_util.h"

namespace {

using moejet::kernels::Precision;
using moejet::kernels::PrecisionScope;
using moejet::testing::all_close;
using moejet::testing::throws_error;
namespace k = moejet::kernels;

torch::Tensor bf16_round(const torch::Tensor& t) {
  return t.to(torch::kBFloat16).to(torch::kFloat);
}

// Forward and both gradients of `fn` against `reference` on fresh leaves.
void expect_same_with_grads(const std::function<torch::Tensor(std::vector<torch::Tensor>&)>& fn,
                            const std::function<torch::Tensor(std::vector<torch::Tensor>&)>& reference,
                            const std::vector<torch::Tensor>& inputs, double rtol, double atol) {
  auto leaves = [&] {
    std::vector<torch::Tensor> v;
    for (const auto& t : inputs) {
      v.push_back(t.defined() ? t.detach().clone().requires_grad_(true) : t);
    }
    return v;
  };
  auto a = leaves(), b = leaves();
  auto ya = fn(a), yb = reference(b);
  ASSERT_EQ(ya.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(ya, yb, rtol, atol));
  auto g = torch::randn_like(yb);
  (ya * g).sum().backward();
  (yb * g).sum().backward();
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].defined()) {
      continue;
    }
    ASSERT_TRUE(a[i].grad().defined()) << "input " << i;
    EXPECT_EQ(a[i].grad().scalar_type(), torch::kFloat) << "input " << i;
    EXPECT_TRUE(all_close(a[i].grad(), b[i].grad(), rtol, atol)) << "gradient of input " << i;
  }
}

TEST(Precision, ParsesNamesTheKeyAndScopesNest) {
  EXPECT_EQ(k::parse_precision("bf16"), Precision::bf16);
  EXPECT_EQ(k::parse_precision("float32"), Precision::fp32);
  EXPECT_TRUE(throws_error<moejet::ConfigError>([] { k::parse_precision("fp16", "config 'train.precision'"); },
                                                {"config 'train.precision'", "\"fp16\"", "bf16"}));
  EXPECT_EQ(k::gemm_precision(), Precision::fp32);
  {
    PrecisionScope outer(Precision::bf16);
    EXPECT_EQ(k::gemm_precision(), Precision::bf16);
    {
      PrecisionScope inner(Precision::fp32);
      EXPECT_EQ(k::gemm_precision(), Precision::fp32);
    }
    EXPECT_EQ(k::gemm_precision(), Precision::bf16);
  }
  EXPECT_EQ(k::gemm_precision(), Precision::fp32);
  EXPECT_NO_THROW(k::require_precision(Precision::fp32, torch::kCPU));
  if (!k::bf16_native(torch::kCPU)) {
    EXPECT_TRUE(throws_error<moejet::ConfigError>([] { k::require_precision(Precision::bf16, torch::kCPU); },
                                                  {"bf16", "precision fp32"}));
  }
}

TEST(Matmul, LinearMatchesTorchWithGradients) {
  torch::manual_seed(0);
  for (bool bias : {true, false}) {
    auto x = torch::randn({3, 37, 24}), w = torch::randn({40, 24}), b = bias ? torch::randn({40}) : torch::Tensor();
    expect_same_with_grads([](auto& v) { return k::linear(v[0], v[1], v[2]); },
                           [](auto& v) { return torch::linear(v[0], v[1], v[2]); }, {x, w, b}, 1e-4, 1e-4);
  }
  // A transposed (non-contiguous) input, as attention's output before proj.
  auto xt = torch::randn({5, 24, 7}).transpose(1, 2);
  auto w = torch::randn({16, 24});
  EXPECT_TRUE(all_close(k::linear(xt, w), torch::linear(xt, w), 1e-4, 1e-4));
}

TEST(Matmul, BatchedAndBroadcastProductsMatchTorch) {
  torch::manual_seed(1);
  // Attention's two products: q k^T on a transposed view, and attn v.
  auto q = torch::randn({2, 3, 17, 8}), kk = torch::randn({2, 3, 17, 8});
  expect_same_with_grads([](auto& v) { return k::matmul(v[0], v[1].transpose(-2, -1)); },
                         [](auto& v) { return torch::matmul(v[0], v[1].transpose(-2, -1)); }, {q, kk}, 1e-4, 1e-4);
  // [B, N, D] x [D, M] (the routing logits).
  auto x = torch::randn({4, 9, 12}), m = torch::randn({6, 12});
  expect_same_with_grads([](auto& v) { return k::matmul(v[0], v[1].t()); },
                         [](auto& v) { return torch::matmul(v[0], v[1].t()); }, {x, m}, 1e-4, 1e-4);
}

TEST(Matmul, Bf16RoundsTheOperandsAndReturnsFp32) {
  torch::manual_seed(2);
  auto x = torch::randn({2, 33, 48}), w = torch::randn({20, 48}), b = torch::randn({20});
  PrecisionScope scope(Precision::bf16);
  auto y = k::linear(x, w, b);
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
  // The product of the rounded operands, not of the fp32 ones: bf16 keeps 8 bits of mantissa, so
  // the fp32 product differs by far more than this tolerance.
  auto rounded = torch::linear(bf16_round(x), bf16_round(w), bf16_round(b));
  EXPECT_TRUE(all_close(y, rounded, 2e-2, 5e-2));
  EXPECT_GT((torch::linear(x, w, b) - y).abs().max().item<double>(), 1e-3) << "bf16 did not round";
  // Gradients come back fp32 for fp32 master weights, close to the fp32 ones.
  expect_same_with_grads([](auto& v) { return k::linear(v[0], v[1], v[2]); },
                         [](auto& v) { return torch::linear(v[0], v[1], v[2]); }, {x, w, b}, 5e-2, 0.3);
  auto a = torch::randn({3, 10, 16}), c = torch::randn({3, 16, 5});
  auto p = k::matmul(a, c);
  EXPECT_EQ(p.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(p, torch::matmul(bf16_round(a), bf16_round(c)), 2e-2, 5e-2));
  auto img = torch::randn({2, 3, 8, 8}), kern = torch::randn({4, 3, 2, 2});
  auto conv = k::conv2d(img, kern, torch::Tensor(), {2, 2}, {0, 0});
  EXPECT_EQ(conv.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(conv, torch::conv2d(bf16_round(img), bf16_round(kern), {}, 2), 2e-2, 5e-2));
}

TEST(Matmul, Bf16LinearOnOnednnAddsTheFp32BiasInsideAndKeepsFp32WeightGradients) {
  if (!k::onednn_available() || !k::bf16_native(torch::kCPU)) {
    GTEST_SKIP() << "bf16 linear layers take ATen's addmm here";
  }
  torch::manual_seed(3);
  auto x = torch::randn({2, 33, 48}).requires_grad_(), w = torch::randn({20, 48}).requires_grad_(),
       b = torch::randn({20}).requires_grad_();
  auto g = torch::randn({2, 33, 20});
  torch::Tensor y, y16;
  {
    PrecisionScope scope(Precision::bf16);
    y = k::linear(x, w, b);
    y16 = k::linear(x, w, b, k::ProductOut::compute);
  }
  const auto xr = bf16_round(x.detach()), wr = bf16_round(w.detach());
  // One rounding of each operand, fp32 accumulation, and the bias added in fp32 (not rounded).
  const auto exact = torch::linear(xr, wr, b.detach());
  ASSERT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(y, exact, 1e-5, 1e-4));
  ASSERT_EQ(y16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(all_close(y16.to(torch::kFloat), exact, 1.0 / 128, 1e-3));  // within one bf16 rounding
  (y * g).sum().backward();
  const auto gr = bf16_round(g).reshape({-1, 20});
  // The weight's gradient straight from an fp32-output product: the bf16 operands' exact product,
  // not rounded to bf16 on the way (a rounded gradient would equal its own rounding).
  const auto gw = gr.t().mm(xr.reshape({-1, 48}));
  ASSERT_EQ(w.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(w.grad(), gw, 1e-5, 1e-4));
  EXPECT_GT((w.grad() - bf16_round(w.grad())).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(all_close(b.grad(), g.reshape({-1, 20}).sum(0), 1e-5, 1e-4));  // the fp32 gradient, summed
  ASSERT_EQ(x.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(x.grad(), gr.mm(wr).view({2, 33, 48}), 1e-5, 1e-4));
  // A bf16 input (a LayerNorm's compute output) gets its gradient in bf16.
  auto xb = torch::randn({7, 48}).to(torch::kBFloat16).requires_grad_();
  {
    PrecisionScope scope(Precision::bf16);
    k::linear(xb, w, b).sum().backward();
  }
  ASSERT_TRUE(xb.grad().defined());
  EXPECT_EQ(xb.grad().scalar_type(), torch::kBFloat16);
}

// Routing and attention products (kernels::matmul) in bf16: the rounded operands' exact product
// in fp32, and gradients in their inputs' dtypes straight from their products, not rounded to bf16
// on the way as ATen's bf16 matmul and autograd's casts back to fp32 would.
TEST(Matmul, Bf16MatmulOnOnednnReturnsFp32ProductsAndGradients) {
  if (!k::onednn_available() || !k::bf16_native(torch::kCPU)) {
    GTEST_SKIP() << "bf16 products take ATen's matmul here";
  }
  torch::manual_seed(4);
  auto a = torch::randn({3, 40, 24}).requires_grad_(), b = torch::randn({24, 17}).requires_grad_();
  const auto g = torch::randn({3, 40, 17});
  torch::Tensor y, y16;
  {
    PrecisionScope scope(Precision::bf16);
    y = k::matmul(a, b.t().contiguous().t());  // a column-major b, as the routing's queries().t()
    y16 = k::matmul(a, b, k::ProductOut::compute);
  }
  const auto ar = bf16_round(a.detach()), br = bf16_round(b.detach());
  const auto exact = torch::matmul(ar, br);
  ASSERT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(y, exact, 1e-5, 1e-4));
  EXPECT_GT((y - bf16_round(y)).abs().max().item<double>(), 0.0) << "the fp32 result was rounded to bf16";
  ASSERT_EQ(y16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(all_close(y16.to(torch::kFloat), exact, 1.0 / 128, 1e-3));
  (y * g).sum().backward();
  const auto gr = bf16_round(g);
  ASSERT_EQ(a.grad().scalar_type(), torch::kFloat);
  ASSERT_EQ(b.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(a.grad(), torch::matmul(gr, br.t()), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(b.grad(), ar.reshape({-1, 24}).t().mm(gr.reshape({-1, 17})), 1e-5, 1e-4));
  EXPECT_GT((b.grad() - bf16_round(b.grad())).abs().max().item<double>(), 0.0);
  // Batched bf16 operands (attention's q and k as compute outputs) get bf16 gradients.
  auto q = torch::randn({2, 3, 9, 8}).to(torch::kBFloat16).requires_grad_(),
       kt = torch::randn({2, 3, 8, 9}).to(torch::kBFloat16).requires_grad_();
  {
    PrecisionScope scope(Precision::bf16);
    k::matmul(q, kt, k::ProductOut::compute).to(torch::kFloat).sum().backward();
  }
  EXPECT_EQ(q.grad().scalar_type(), torch::kBFloat16);
  EXPECT_EQ(kt.grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(all_close(q.grad().to(torch::kFloat),
                        torch::ones({2, 3, 9, 9}).matmul(kt.detach().to(torch::kFloat).transpose(-2, -1)), 1.0 / 128,
                        1e-2));
}

TEST(Matmul, GemmKernelNamesTheKernelOfEachPrecision) {
  // What `moejet bench` prints beside its GEMM peaks: the kernel kernels::matmul takes there.
  EXPECT_EQ(k::gemm_kernel(c10::Device(c10::DeviceType::CUDA), Precision::bf16), "cuBLAS bf16");
  const auto fp32 = k::gemm_kernel(torch::kCPU, Precision::fp32);
  const auto bf16 = k::gemm_kernel(torch::kCPU, Precision::bf16);
  if (k::onednn_available()) {
    EXPECT_EQ(fp32.rfind("oneDNN fp32 (", 0), 0u) << fp32;
    EXPECT_EQ(bf16.rfind("oneDNN bf16 (", 0), 0u) << bf16;
    EXPECT_EQ(bf16.find("ATen"), std::string::npos) << bf16;  // moejet's oneDNN product, named by oneDNN
  } else {
    EXPECT_EQ(fp32, "BLAS fp32 (ATen)");
    EXPECT_EQ(bf16, "oneDNN bf16 (ATen)");
  }
}

TEST(Precision, AutoIsBf16WhereTheDeviceHasItNatively) {
  EXPECT_EQ(k::resolve_precision("auto", torch::kCPU), k::bf16_native(torch::kCPU) ? Precision::bf16 : Precision::fp32);
  EXPECT_EQ(k::resolve_precision("fp32", torch::kCPU), Precision::fp32);
  EXPECT_EQ(k::resolve_precision("bf16", torch::kCPU), Precision::bf16);
  EXPECT_THROW(k::resolve_precision("fp16", torch::kCPU), moejet::ConfigError);
}

TEST(Matmul, ExpertProductsFollowThePrecision) {
  torch::manual_seed(3);
  auto a = torch::randn({4, 6, 32}), b = torch::randn({4, 32, 8}), bias = torch::randn({4, 8});
  const auto fp32 = k::expert_bmm(a, b, bias);
  PrecisionScope scope(Precision::bf16);
  const auto y = k::expert_bmm(a, b, bias);
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(y, torch::baddbmm(bias.unsqueeze(1), bf16_round(a), bf16_round(b)), 2e-2, 5e-2));
  EXPECT_GT((fp32 - y).abs().max().item<double>(), 1e-3) << "bf16 did not round";
  auto la = a.clone().requires_grad_(true), lb = b.clone().requires_grad_(true);
  k::batched_matmul(la, lb).sum().backward();
  EXPECT_EQ(la.grad().scalar_type(), torch::kFloat);
  EXPECT_EQ(lb.grad().scalar_type(), torch::kFloat);
}

TEST(OnednnMatmul, ViTShapesRunOnOptimisedKernels) {
  if (!k::onednn_available()) {
    GTEST_SKIP() << "built without oneDNN";
  }
  // ViT-T's linear layers and attention at batch 2: a reference (ref:*) kernel would be tens of
  // times slower, so a layout it falls back to is a defect.
  const int64_t T = 2 * 197;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> cases = {
      {torch::randn({T, 192}), torch::randn({576, 192}).t()},
      {torch::randn({T, 768}), torch::randn({192, 768}).t()},
      {torch::randn({T, 192}).t(), torch::randn({T, 768})},
      {torch::randn({2, 3, 197, 64}), torch::randn({2, 3, 197, 64}).transpose(-2, -1)},
  };
  for (const auto& [a, b] : cases) {
    const auto impl = k::onednn_matmul_impl(a, b);
    EXPECT_FALSE(impl.empty());
    EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << a.sizes() << " x " << b.sizes() << ": " << impl;
    EXPECT_TRUE(all_close(k::onednn_matmul(a, b), torch::matmul(a, b), 1e-4, 1e-3));
  }
  EXPECT_FALSE(k::onednn_matmul_supports(torch::randn({4, 4}), torch::randn({4, 4}, torch::kDouble)));
}

TEST(OnednnMatmul, ExpertShapesRunOnOptimisedKernels) {
  if (!k::onednn_available()) {
    GTEST_SKIP() << "built without oneDNN";
  }
  // V-JetMoE-T's expert products at batch 32 (fewer experts): the forward x W^T, the input
  // gradient and the weight gradient (its transposed first operand copied row-major), each as one
  // batched primitive.
  const int64_t E = 3, T = 32, D = 192, H = 768;
  const auto x = torch::randn({E, T, D}), w = torch::randn({E, H, D}), gy = torch::randn({E, T, H});
  for (const auto& prec : {torch::kFloat, torch::kBFloat16}) {
    for (const auto& [a, b] : std::vector<std::pair<torch::Tensor, torch::Tensor>>{
             {x, w.transpose(1, 2)}, {gy, w}, {gy.transpose(1, 2).contiguous(), x}}) {
      const auto impl = k::onednn_matmul_impl(a.to(prec), b.to(prec));
      EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << a.sizes() << " x " << b.sizes() << ": " << impl;
    }
  }
  const auto bias = torch::randn({E, H});
  EXPECT_TRUE(all_close(k::expert_bmm(x, w.transpose(1, 2), bias),
                        torch::baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2)), 1e-4, 1e-3));
  EXPECT_TRUE(all_close(k::expert_bmm(gy.transpose(1, 2), x), torch::bmm(gy.transpose(1, 2), x), 1e-4, 1e-3));
}

}  // namespace

namespace {

TEST(Bf16Cast, RoundsToNearestEvenLikeAtenBothWaysWithGradients) {
  torch::manual_seed(4);
  // Odd sizes exercise the vector body and the scalar tail; ties and extremes the rounding.
  for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{33}, int64_t{100003}}) {
    auto x = torch::randn({n}) * 100;
    auto b = k::to_bf16(x);
    ASSERT_EQ(b.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(b, x.to(torch::kBFloat16))) << n;
    EXPECT_TRUE(torch::equal(k::to_fp32(b), b.to(torch::kFloat))) << n;
  }
  auto ties = torch::tensor({1.00390625f, 1.01171875f, -2.0078125f, 3.4e38f, 1e-40f, 0.0f, -0.0f});
  EXPECT_TRUE(torch::equal(k::to_bf16(ties), ties.to(torch::kBFloat16)));
  // The same in the vector body (whose instruction alone would flush denormals), with infinities.
  auto body = torch::randn({64});
  const std::vector<float> odd = {1e-40f, -1e-40f, 1.1e-38f, -0.0f, INFINITY, -INFINITY, 0.0f, 3e-39f};
  for (size_t i = 0; i < odd.size(); ++i) {
    body[static_cast<int64_t>(5 * i)] = odd[i];
  }
  EXPECT_TRUE(torch::equal(k::to_bf16(body).view(torch::kShort), body.to(torch::kBFloat16).view(torch::kShort)));
  body[7] = NAN;
  EXPECT_TRUE(k::to_fp32(k::to_bf16(body))[7].isnan().item<bool>());
  auto leaf = torch::randn({5, 7}).requires_grad_(true);
  auto y = k::to_fp32(k::to_bf16(leaf) * 2);
  y.sum().backward();
  EXPECT_EQ(leaf.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(leaf.grad(), torch::full({5, 7}, 2.0f)));
  // A strided tensor takes ATen's conversion, with the same result.
  auto t = torch::randn({8, 6}).t();
  EXPECT_TRUE(torch::equal(k::to_bf16(t), t.to(torch::kBFloat16)));
}

TEST(Bf16Cast, SumsInFp32WithoutConvertingFirst) {
  torch::manual_seed(5);
  // Rows split over threads (one slice), one slice a thread (an expert's), a middle dim, a tail.
  for (const auto& [sizes, dim] : std::vector<std::pair<std::vector<int64_t>, int64_t>>{
           {{6304, 768}, 0}, {{98, 32, 768}, 1}, {{3, 5, 7}, 1}, {{3, 5, 7}, -1}, {{40000, 3}, 0}, {{5, 0}, 0}}) {
    const auto x = torch::randn(sizes).to(torch::kBFloat16);
    const auto s = k::sum_fp32(x, dim);
    ASSERT_EQ(s.scalar_type(), torch::kFloat);
    const auto ref = x.to(torch::kDouble).sum(dim).to(torch::kFloat);
    ASSERT_EQ(s.sizes(), ref.sizes());
    // fp32 accumulation of exact bf16 values: far inside a bf16 rounding of the result.
    EXPECT_TRUE(all_close(s, ref, 1e-5, 1e-3)) << x.sizes() << " dim " << dim;
  }
  // fp32 and strided inputs take ATen's sum.
  const auto f = torch::randn({9, 4});
  EXPECT_TRUE(torch::allclose(k::sum_fp32(f, 0), f.sum(0)));
  const auto t = torch::randn({4, 9}).to(torch::kBFloat16).t();
  EXPECT_TRUE(all_close(k::sum_fp32(t, 0), t.to(torch::kFloat).sum(0), 1e-5, 1e-4));
}

}  // namespace
