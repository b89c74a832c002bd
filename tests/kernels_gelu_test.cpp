#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/kernels/gelu.h"
#include "test_util.h"

using moejet::testing::all_close;
using moejet::testing::output_and_grad;

TEST(Gelu, MatchesTheErfFormInDoubleWithGradients) {
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(0);
  // An MLP hidden layer's size (several threads, a tail shorter than a vector), the tails of
  // the distribution, zero, and values where exp(-x^2 / 2) underflows.
  auto x = torch::cat(
      {torch::randn({40000}) * 3, torch::tensor({0.0f, -0.0f, 1e-8f, -6.0f, 6.0f, -20.0f, 20.0f, -1e4f, 1e4f})});
  const auto g = torch::randn_like(x);
  const auto gelu = [](const torch::Tensor& t) { return moejet::kernels::gelu(t); };
  const auto torch_gelu = [](const torch::Tensor& t) { return torch::gelu(t); };
  const auto ours = output_and_grad(x, g, gelu);
  const auto ref = output_and_grad(x.to(torch::kDouble), g, torch_gelu);
  EXPECT_EQ(ours.out.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(ours.out, ref.out, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(ours.grad, ref.grad, 1e-5, 1e-6));
  // And about as close as torch's own fp32 gelu.
  const auto torch32 = output_and_grad(x, g, torch_gelu);
  const double ours_err = (ours.grad.to(torch::kDouble) - ref.grad).abs().max().item<double>();
  const double torch_err = (torch32.grad.to(torch::kDouble) - ref.grad).abs().max().item<double>();
  EXPECT_LE(ours_err, 4 * torch_err + 1e-7) << ours_err << " vs torch's " << torch_err;
}

TEST(Gelu, Bf16KeepsItsDtypeAndMatchesTheErfFormInDouble) {
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(1);
  const auto x = (torch::randn({3, 197, 768}) * 2).to(torch::kBFloat16);
  const auto g = torch::randn({3, 197, 768});
  const auto gelu = [](const torch::Tensor& t) { return moejet::kernels::gelu(t); };
  const auto ours = output_and_grad(x, g, gelu);
  const auto ref = output_and_grad(x.to(torch::kDouble), g.to(torch::kBFloat16).to(torch::kDouble),
                                   [](const torch::Tensor& t) { return torch::gelu(t); });
  EXPECT_EQ(ours.out.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(ours.grad.scalar_type(), torch::kBFloat16);
  // One rounding of the output, two of the gradient (the kept derivative, then the product).
  EXPECT_TRUE(all_close(ours.out, ref.out, 1e-2, 1e-3));
  EXPECT_TRUE(all_close(ours.grad, ref.grad, 2e-2, 2e-3));
  // An fp32 gradient (an fp32 consumer of a bf16 GELU) comes back in bf16, x's dtype.
  const auto fp32_grad =
      output_and_grad(x, g, [](const torch::Tensor& t) { return moejet::kernels::gelu(t).to(torch::kFloat); });
  EXPECT_EQ(fp32_grad.grad.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(all_close(fp32_grad.grad, ref.grad, 2e-2, 2e-3));
}

TEST(Gelu, WithoutGradientsItIsTheSameOutput) {
  torch::manual_seed(2);
  for (const auto type : {torch::kFloat, torch::kBFloat16}) {
    const auto x = torch::randn({1000}).to(type);
    const auto with_grad = moejet::kernels::gelu(x.clone().requires_grad_(true)).detach();
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(moejet::kernels::gelu(x), with_grad));
    EXPECT_TRUE(torch::equal(moejet::kernels::gelu(x.clone().requires_grad_(true)), with_grad));
  }
}

TEST(Gelu, OtherDtypesRunTorchsGelu) {
  const auto x = torch::randn({7}, torch::kDouble);
  EXPECT_TRUE(torch::equal(moejet::kernels::gelu(x), torch::gelu(x)));
}

TEST(GeluLinear, IsLinearOfGeluWithGradientsInBothPrecisions) {
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(3);
  const auto w0 = torch::randn({48, 96}) * 0.1, b0 = torch::randn({48});
  for (const auto type : {torch::kFloat, torch::kBFloat16}) {
    const auto x0 = torch::randn({2, 37, 96}).to(type);
    if (!moejet::kernels::fused_gelu_linear(x0, w0, b0)) {
      GTEST_SKIP() << "no AVX-512 BF16 or oneDNN here";
    }
    const auto g = torch::randn({2, 37, 48});
    auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    auto y = moejet::kernels::gelu_linear(x, w, b);
    y.backward(g);
    // The reference in double, on the operands the products see (bf16-rounded weight).
    const auto wr = w0.to(type).to(torch::kDouble);
    auto rx = x0.to(torch::kDouble).requires_grad_(true), rw = wr.clone().requires_grad_(true),
         rb = b0.to(torch::kDouble).requires_grad_(true);
    auto ry = torch::linear(torch::gelu(rx), rw, rb);
    ry.backward(g.to(type).to(torch::kDouble));
    EXPECT_EQ(y.scalar_type(), torch::kFloat);
    EXPECT_EQ(x.grad().scalar_type(), type);
    EXPECT_EQ(w.grad().scalar_type(), torch::kFloat);
    const double tol = type == torch::kFloat ? 1e-4 : 3e-2;
    EXPECT_TRUE(all_close(y, ry, tol, tol)) << type;
    EXPECT_TRUE(all_close(x.grad(), rx.grad(), tol, tol)) << type;
    EXPECT_TRUE(all_close(w.grad(), rw.grad(), tol, tol)) << type;
    EXPECT_TRUE(all_close(b.grad(), rb.grad(), tol, tol)) << type;
  }
  // Without autograd the MLP takes the separate path.
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(moejet::kernels::fused_gelu_linear(torch::randn({4, 96}), w0, b0));
}
