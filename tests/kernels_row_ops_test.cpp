#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/kernels/row_ops.h"
#include "test_util.h"

using moejet::kernels::l2_normalize;
using moejet::kernels::row_softmax;
using moejet::testing::all_close;

namespace {

namespace F = torch::nn::functional;

// Values and input gradients of `fused(x)` against `reference(x)` for a random upstream gradient.
template <class A, class B>
void expect_same_op(const torch::Tensor& x0, A fused, B reference, const char* what) {
  auto x = x0.clone().requires_grad_(true), rx = x0.clone().requires_grad_(true);
  auto y = fused(x), ry = reference(rx);
  ASSERT_EQ(y.sizes(), ry.sizes()) << what;
  EXPECT_TRUE(all_close(y, ry, 1e-5, 1e-6)) << what;
  auto g = torch::randn_like(ry);
  (y * g).sum().backward();
  (ry * g).sum().backward();
  EXPECT_TRUE(all_close(x.grad(), rx.grad(), 1e-4, 1e-5)) << what;
}

}  // namespace

TEST(RowOps, FusedL2NormalizeMatchesTorchNormalizeWithGradients) {
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(0);
  auto ref = [](double eps) {
    return [eps](const torch::Tensor& t) { return F::normalize(t, F::NormalizeFuncOptions().dim(-1).eps(eps)); };
  };
  auto fused = [](double eps) { return [eps](const torch::Tensor& t) { return l2_normalize(t, eps); }; };
  // Routing-sized rows, many rows (several threads), odd widths, one element per row.
  expect_same_op(torch::randn({4, 196, 192}), fused(1e-6), ref(1e-6), "keys");
  expect_same_op(torch::randn({7, 13}), fused(1e-6), ref(1e-6), "odd");
  expect_same_op(torch::randn({5, 1}), fused(1e-12), ref(1e-12), "width 1");
  // Rows whose norm is below eps are divided by eps, and their gradient is 1 / eps.
  auto small = torch::randn({3, 8});
  small[1] *= 1e-4;
  expect_same_op(small, fused(1e-2), ref(1e-2), "clamped row");
  // A transposed (non-contiguous) input, and double (the torch path).
  expect_same_op(torch::randn({16, 9}).t(), fused(1e-6), ref(1e-6), "transposed");
  expect_same_op(torch::randn({6, 10}, torch::kDouble), fused(1e-6), ref(1e-6), "double");
  auto y = l2_normalize(torch::randn({64, 192}), 1e-6);
  EXPECT_TRUE(all_close(y.norm(2, -1), torch::ones({64}), 1e-5, 1e-6));
}

TEST(RowOps, AdditiveEpsL2NormalizeIsTheAuthorsL2normWithGradients) {
  torch::manual_seed(1);
  // The authors' l2norm: x * 1 / (sqrt(sum x^2) + eps).
  auto ref = [](double eps) {
    return [eps](const torch::Tensor& t) { return t * (1.0 / (t.square().sum(-1, true).sqrt() + eps)); };
  };
  auto fused = [](double eps) { return [eps](const torch::Tensor& t) { return l2_normalize(t, eps, true); }; };
  expect_same_op(torch::randn({4, 196, 192}), fused(1e-6), ref(1e-6), "keys");
  // Near-zero rows, where the two forms differ most: |y| = |x| / (|x| + eps) < 1.
  auto small = torch::randn({3, 8});
  small[1] *= 1e-3;
  expect_same_op(small, fused(1e-2), ref(1e-2), "small row");
  expect_same_op(torch::randn({6, 10}, torch::kDouble), fused(1e-6), ref(1e-6), "double");
  const double n = small[1].norm().item<double>();
  EXPECT_NEAR(l2_normalize(small, 1e-2, true)[1].norm().item<double>(), n / (n + 1e-2), 1e-6);
  EXPECT_NEAR(l2_normalize(small, 1e-2, false)[1].norm().item<double>(), n / 1e-2, 1e-6);  // clamped
}

TEST(RowOps, FusedRowSoftmaxMatchesTorchSoftmaxWithGradients) {
  torch::manual_seed(1);
  // Two threads: each takes half of the rows (the test runner's one thread would run them all).
  moejet::testing::ScopedTorchThreads threads(2);
  auto ref = [](const torch::Tensor& t) { return torch::softmax(t, -1); };
  auto fused = [](const torch::Tensor& t) { return row_softmax(t); };
  expect_same_op(torch::randn({4, 294, 196}) * 3, fused, ref, "dispatch");
  expect_same_op(torch::randn({3, 5}) * 50, fused, ref, "large logits");
  expect_same_op(torch::randn({2, 7, 1}), fused, ref, "width 1");
  expect_same_op(torch::randn({9, 12}).t(), fused, ref, "transposed");
  expect_same_op(torch::randn({3, 6}, torch::kDouble), fused, ref, "double");
}
