#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/kernels/layer_norm.h"
#include "moejet/kernels/precision.h"
#include "test_util.h"

using moejet::kernels::layer_norm;
using moejet::kernels::Precision;
using moejet::kernels::PrecisionScope;
using moejet::kernels::ProductOut;
using moejet::testing::all_close;

namespace {

struct Grads {
  torch::Tensor y, dx, dw, db;
};

// Output and the gradients of x, weight and bias for upstream gradient g (in y's dtype).
template <class Fn>
Grads run(const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& b0, const torch::Tensor& g, Fn fn) {
  auto x = x0.detach().clone().requires_grad_(true), w = w0.detach().clone().requires_grad_(true),
       b = b0.detach().clone().requires_grad_(true);
  auto y = fn(x, w, b);
  y.backward(g.to(y.scalar_type()));
  return {y.detach(), x.grad(), w.grad(), b.grad()};
}

Grads reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& g,
                double eps) {
  return run(x.to(torch::kDouble), w.to(torch::kDouble), b.to(torch::kDouble), g.to(torch::kDouble),
             [&](const auto& xx, const auto& ww, const auto& bb) {
               return torch::layer_norm(xx, {xx.size(-1)}, ww, bb, eps);
             });
}

void expect_close(const Grads& got, const Grads& ref, double rtol, double atol, const std::string& what) {
  EXPECT_TRUE(all_close(got.y.to(torch::kDouble), ref.y, rtol, atol)) << what << " y";
  EXPECT_TRUE(all_close(got.dx.to(torch::kDouble), ref.dx, rtol, atol)) << what << " dx";
  EXPECT_TRUE(all_close(got.dw.to(torch::kDouble), ref.dw, rtol, atol * 10)) << what << " dw";
  EXPECT_TRUE(all_close(got.db.to(torch::kDouble), ref.db, rtol, atol * 10)) << what << " db";
}

}  // namespace

TEST(LayerNorm, Fp32MatchesTorchInDoubleWithGradients) {
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(0);
  // A ViT block's width over several row blocks and threads, a width with a tail (50), one row,
  // an offset mean and a small spread (the two-pass variance), and eps that matters.
  for (auto [rows, n, shift, scale, eps] :
       std::vector<std::tuple<int64_t, int64_t, double, double, double>>{{300, 192, 0.0, 1.0, 1e-6},
                                                                         {7, 50, 0.0, 1.0, 1e-5},
                                                                         {1, 16, 0.0, 1.0, 1e-6},
                                                                         {130, 33, 100.0, 0.01, 1e-6},
                                                                         {9, 24, 0.0, 1e-3, 1e-2}}) {
    auto x = torch::randn({rows, n}) * scale + shift;
    auto w = torch::randn({n}), b = torch::randn({n}), g = torch::randn({rows, n});
    const auto ours =
        run(x, w, b, g, [&](const auto& xx, const auto& ww, const auto& bb) { return layer_norm(xx, ww, bb, eps); });
    ASSERT_EQ(ours.y.scalar_type(), torch::kFloat);
    const auto torch32 = run(x, w, b, g, [&](const auto& xx, const auto& ww, const auto& bb) {
      return torch::layer_norm(xx, {n}, ww, bb, eps);
    });
    const auto ref = reference(x, w, b, g, eps);
    const std::string what = std::to_string(rows) + "x" + std::to_string(n);
    if (shift == 0.0) {
      expect_close(ours, ref, 1e-4, 1e-5, what);
    }
    // As close to double as torch's own fp32 kernel, within a factor (rows offset by 100 with a
    // 0.01 spread lose digits in fp32 either way).
    auto err = [&](const torch::Tensor& t, const torch::Tensor& r) {
      return (t.to(torch::kDouble) - r).abs().max().item<double>();
    };
    EXPECT_LE(err(ours.y, ref.y), 4 * err(torch32.y, ref.y) + 1e-5) << what;
    EXPECT_LE(err(ours.dx, ref.dx), 4 * err(torch32.dx, ref.dx) + 1e-5) << what;
    EXPECT_LE(err(ours.dw, ref.dw), 4 * err(torch32.dw, ref.dw) + 1e-4) << what;
  }
}

TEST(LayerNorm, Bf16OutputUnderBf16ProductsWithABf16Gradient) {
  torch::manual_seed(1);
  auto x = torch::randn({200, 192}) * 2 + 0.5, w = torch::randn({192}), b = torch::randn({192});
  auto g = torch::randn({200, 192}).to(torch::kBFloat16);
  const auto ref = reference(x, w, b, g, 1e-6);
  Grads ours;
  {
    PrecisionScope bf16(Precision::bf16);
    ours = run(x, w, b, g, [](const auto& xx, const auto& ww, const auto& bb) {
      return layer_norm(xx, ww, bb, 1e-6, ProductOut::compute);
    });
  }
  // Where the fused kernel runs the output is bf16 (one rounding), the gradients fp32.
  EXPECT_TRUE(ours.y.scalar_type() == torch::kBFloat16 || ours.y.scalar_type() == torch::kFloat);
  EXPECT_EQ(ours.dx.scalar_type(), torch::kFloat);
  EXPECT_EQ(ours.dw.scalar_type(), torch::kFloat);
  expect_close(ours, ref, 1.0 / 128, 1e-2, "bf16");
  // Outside a bf16 scope, or asked for fp32, the output is fp32.
  EXPECT_EQ(layer_norm(x, w, b, 1e-6, ProductOut::compute).scalar_type(), torch::kFloat);
  PrecisionScope bf16(Precision::bf16);
  EXPECT_EQ(layer_norm(x, w, b, 1e-6).scalar_type(), torch::kFloat);
}

TEST(LayerNorm, WeightGradientsDoNotDependOnTheThreadCount) {
  torch::manual_seed(2);
  auto x = torch::randn({1000, 64}), w = torch::randn({64}), b = torch::randn({64}), g = torch::randn({1000, 64});
  if (!moejet::kernels::fused_layer_norm(x, w, b)) {
    GTEST_SKIP() << "torch's layer_norm here (no AVX-512 BF16, or MOEJET_AVX512_ROWS=0)";
  }
  auto fn = [](const auto& xx, const auto& ww, const auto& bb) { return layer_norm(xx, ww, bb, 1e-6); };
  Grads one, two;
  {
    moejet::testing::ScopedTorchThreads threads(1);
    one = run(x, w, b, g, fn);
  }
  {
    moejet::testing::ScopedTorchThreads threads(2);
    two = run(x, w, b, g, fn);
  }
  EXPECT_TRUE(torch::equal(one.dw, two.dw));
  EXPECT_TRUE(torch::equal(one.db, two.db));
  EXPECT_TRUE(torch::equal(one.dx, two.dx));
}

TEST(LayerNorm, OtherDtypesAndShapesTakeTorchsLayerNorm) {
  auto xd = torch::randn({4, 8}, torch::kDouble), wd = torch::randn({8}, torch::kDouble),
       bd = torch::randn({8}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(layer_norm(xd, wd, bd, 1e-6), torch::layer_norm(xd, {8}, wd, bd, 1e-6)));
  // A weight of the wrong width is torch's error, not a silent read past the row.
  EXPECT_THROW(layer_norm(torch::randn({4, 8}), torch::randn({7}), torch::randn({7}), 1e-6), c10::Error);
}
