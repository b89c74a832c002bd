// The fused CPU dropout: what nn::dropout runs on CPU float, double and bf16 tensors, and only on those.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/kernels/dropout.h"
#include "moejet/nn/dropout.h"

using moejet::kernels::fused_dropout;

TEST(FusedDropout, IsWhatNnDropoutRunsOnTheCpuAndItsGradientIsTheMask) {
  auto x = torch::randn({3, 1000}).requires_grad_();
  torch::manual_seed(5);
  auto y = fused_dropout(x, 0.3);
  torch::manual_seed(5);
  EXPECT_TRUE(torch::equal(y, moejet::nn::dropout(x, 0.3, true)));
  y.sum().backward();
  // Kept elements pass the gradient scaled by 1 / (1 - p), dropped ones nothing.
  auto kept = y.ne(0);
  EXPECT_TRUE(torch::allclose(x.grad(), kept.to(torch::kFloat) / 0.7));
  EXPECT_TRUE(torch::allclose(y.masked_select(kept), x.masked_select(kept) / 0.7));
}

TEST(FusedDropout, Bf16KeepsTheFp32MaskAndScalesInFp32) {
  // A bf16 hidden layer (expert and dense MLPs in bf16): the mask is the one the same seed draws
  // for fp32, and kept values are x / (1 - p) taken in fp32 and rounded once. bf16's own
  // 1 / 0.9 is 1.109375, 0.16% short.
  auto x32 = torch::randn({4, 777});
  auto x = x32.to(torch::kBFloat16).requires_grad_();
  torch::manual_seed(11);
  auto y = moejet::nn::dropout(x, 0.1, true);
  torch::manual_seed(11);
  auto y32 = fused_dropout(x.detach().to(torch::kFloat), 0.1);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(y.ne(0), y32.ne(0)));
  EXPECT_TRUE(torch::equal(y, y32.to(torch::kBFloat16)));
  const double kept = y.ne(0).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.9, 0.02);
  auto g = torch::randn({4, 777}).to(torch::kBFloat16);
  y.backward(g);
  ASSERT_EQ(x.grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(x.grad(), (g.to(torch::kFloat) * y32.ne(0).to(torch::kFloat) / 0.9f).to(torch::kBFloat16)));
}

TEST(FusedDropout, RefusesWhatItWasNotWrittenFor) {
  EXPECT_THROW(fused_dropout(torch::ones({4}, torch::kLong), 0.5), c10::Error);
  EXPECT_THROW(fused_dropout(torch::ones({4}), 0.0), c10::Error);
  EXPECT_THROW(fused_dropout(torch::ones({4}), 1.0), c10::Error);
}
