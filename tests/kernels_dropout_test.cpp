// The fused CPU dropout: what nn::dropout runs on CPU float tensors, and only on those.

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

TEST(FusedDropout, RefusesWhatItWasNotWrittenFor) {
  EXPECT_THROW(fused_dropout(torch::ones({4}, torch::kLong), 0.5), c10::Error);
  EXPECT_THROW(fused_dropout(torch::ones({4}), 0.0), c10::Error);
  EXPECT_THROW(fused_dropout(torch::ones({4}), 1.0), c10::Error);
}
