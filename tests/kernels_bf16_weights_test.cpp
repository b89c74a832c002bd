#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "moejet/kernels/adamw.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/bf16_weights.h"

namespace {

using moejet::kernels::bf16_weight;
using moejet::kernels::bf16_weight_cache_stats;

torch::Tensor param(std::vector<int64_t> sizes, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randn(sizes).requires_grad_(true);
}

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == torch::kBFloat16 && b.scalar_type() == torch::kBFloat16 && a.sizes() == b.sizes() &&
         torch::equal(a.view(torch::kShort), b.view(torch::kShort));
}

TEST(Bf16Weights, AnUnchangedParameterIsConvertedOnceAndItsCopyReused) {
  auto w = param({96, 64}, 1);
  const auto before = bf16_weight_cache_stats().conversions;
  auto a = bf16_weight(w);
  auto b = bf16_weight(w);
  auto c = bf16_weight(w);
  EXPECT_EQ(bf16_weight_cache_stats().conversions - before, 1u);
  EXPECT_EQ(a.data_ptr(), b.data_ptr());
  EXPECT_EQ(a.data_ptr(), c.data_ptr());
  EXPECT_FALSE(a.requires_grad());
  EXPECT_TRUE(same_bits(a, moejet::kernels::to_bf16(w.detach())));
}

TEST(Bf16Weights, AnInPlaceChangeIsSeenAndACopySomebodyHoldsIsLeftAsItWas) {
  auto w = param({33, 17}, 2);
  auto held = bf16_weight(w);  // as a graph that saved it would hold it
  const auto held_bits = held.clone();
  {
    torch::NoGradGuard no_grad;
    w.mul_(3.0);
  }
  auto now = bf16_weight(w);
  EXPECT_TRUE(same_bits(now, moejet::kernels::to_bf16(w.detach())));
  EXPECT_TRUE(same_bits(held, held_bits)) << "a copy still held was overwritten";
  EXPECT_NE(now.data_ptr(), held.data_ptr());
  // Nobody holds the copy any more: the next change is converted into it, in place.
  held.reset();
  const auto* storage = now.data_ptr();
  now.reset();
  {
    torch::NoGradGuard no_grad;
    w.add_(1.0);
  }
  auto again = bf16_weight(w);
  EXPECT_EQ(again.data_ptr(), storage);
  EXPECT_TRUE(same_bits(again, moejet::kernels::to_bf16(w.detach())));
}

TEST(Bf16Weights, NotAParameterIsConvertedEveryTimeAndNotKept) {
  torch::manual_seed(3);
  auto x = torch::randn({40, 8});     // no grad: an activation, not a parameter
  auto view = param({8, 40}, 4).t();  // not contiguous
  const auto before = bf16_weight_cache_stats();
  auto a = bf16_weight(x);
  auto b = bf16_weight(x);
  auto v = bf16_weight(view);
  const auto after = bf16_weight_cache_stats();
  EXPECT_EQ(after.conversions, before.conversions);
  EXPECT_EQ(after.copies, before.copies);
  EXPECT_NE(a.data_ptr(), b.data_ptr());
  EXPECT_TRUE(same_bits(a, moejet::kernels::to_bf16(x)));
  EXPECT_TRUE(same_bits(v, moejet::kernels::to_bf16(view.detach())));
}

TEST(Bf16Weights, AFreedParametersCopyIsDroppedAtTheNextConversion) {
  moejet::kernels::clear_bf16_weights();
  auto keep = param({64, 64}, 5);
  {
    auto gone = param({256, 256}, 6);
    bf16_weight(gone);
    bf16_weight(keep);
    const auto s = bf16_weight_cache_stats();
    EXPECT_EQ(s.copies, 2u);
    EXPECT_EQ(s.bytes, 2u * (256 * 256 + 64 * 64));
  }
  EXPECT_EQ(bf16_weight_cache_stats().copies, 1u);  // the dead one no longer counts
  auto other = param({16, 16}, 7);
  bf16_weight(other);  // a miss: the dead copy goes
  const auto s = bf16_weight_cache_stats();
  EXPECT_EQ(s.copies, 2u);
  EXPECT_EQ(s.bytes, 2u * (64 * 64 + 16 * 16));
}

}  // namespace

namespace {

// The fused AdamW writes a parameter's bf16 copy itself; the copy must be what converting the new
// weights would give, bit for bit, or the forward would multiply by other numbers than before.
TEST(Bf16Weights, AdamwWritesTheCopyRoundedAsTheConversionRoundsIt) {
  torch::manual_seed(8);
  auto p = torch::randn({4099}) * 3;
  std::vector<float> special = {0.0f,
                                -0.0f,
                                1e-40f,
                                -1e-40f,
                                1.17e-38f,
                                -3e-39f,
                                65504.0f,
                                3.0e38f,
                                -3.0e38f,
                                INFINITY,
                                -INFINITY,
                                NAN,
                                1.00390625f /* halfway, even */,
                                1.01171875f /* halfway, odd */};
  uint32_t halfway_up = 0x3f808000u;  // exactly between two bf16 values, the lower one odd
  float h;
  std::memcpy(&h, &halfway_up, sizeof h);
  special.push_back(h);
  // At the start, in the vector loops, and at the end, in their tails.
  for (size_t i = 0; i < special.size(); ++i) {
    p[static_cast<int64_t>(i)] = special[i];
    p[p.numel() - 1 - static_cast<int64_t>(i)] = special[i];
  }
  // No gradient and no decay: the update leaves p as it is, and the copy is p rounded.
  auto g = torch::zeros_like(p), m = torch::zeros_like(p), v = torch::zeros_like(p);
  moejet::kernels::AdamWCoefficients c{1.0f, 0.9f, 0.999f, 0.1f, 0.001f, 1.0f, 1e-8f, 0.01f};
  auto out = torch::empty({p.numel()}, torch::kBFloat16);
  const auto before = p.clone();
  moejet::kernels::adamw_update(p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), 0,
                                p.numel(), c, reinterpret_cast<uint16_t*>(out.data_ptr()));
  ASSERT_TRUE(torch::equal(p.isnan(), before.isnan()));
  const auto expected = moejet::kernels::to_bf16(p);
  const auto a = out.view(torch::kShort), b = expected.view(torch::kShort);
  for (int64_t i = 0; i < p.numel(); ++i) {
    ASSERT_EQ(a[i].item<int16_t>(), b[i].item<int16_t>()) << "at " << i << ": " << p[i].item<float>();
  }
}

}  // namespace
