#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "moejet/kernels/counter_random.h"

using moejet::kernels::counter_normal;

namespace {

double normal_cdf(double z) {
  return 0.5 * std::erfc(-z / std::sqrt(2.0));
}

}  // namespace

TEST(CounterNormal, MomentsTailsAndDistributionAreStandardNormal) {
  const int64_t n = 1 << 20;
  std::vector<float> z(static_cast<size_t>(n));
  counter_normal(z.data(), n, 0, 0x1234abcdULL, 1.0f);
  double s1 = 0, s2 = 0, s4 = 0, max_abs = 0;
  int64_t within1 = 0, within2 = 0;
  for (float v : z) {
    ASSERT_TRUE(std::isfinite(v));
    s1 += v;
    s2 += double(v) * v;
    s4 += double(v) * v * v * v;
    max_abs = std::max(max_abs, double(std::abs(v)));
    within1 += std::abs(v) < 1;
    within2 += std::abs(v) < 2;
  }
  const double mean = s1 / n, var = s2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.005);  // standard error 0.001
  EXPECT_NEAR(var, 1.0, 0.01);
  EXPECT_NEAR(s4 / n / (var * var), 3.0, 0.05);  // kurtosis, standard error 0.005
  EXPECT_NEAR(double(within1) / n, 0.682689, 0.003);
  EXPECT_NEAR(double(within2) / n, 0.954500, 0.002);
  EXPECT_LE(max_abs, 5.78);  // 24-bit uniforms: r = sqrt(-2 ln 2^-24)
  EXPECT_GT(max_abs, 4.0);   // ... but the tails are there (P(|z| > 4) * n ~ 66)
  // Kolmogorov-Smirnov distance to the normal CDF (1% critical value 1.63 / sqrt(n) = 0.0016).
  std::sort(z.begin(), z.end());
  double ks = 0;
  for (int64_t i = 0; i < n; i += 97) {
    const double f = normal_cdf(z[static_cast<size_t>(i)]);
    ks = std::max({ks, std::abs(f - double(i) / n), std::abs(f - double(i + 1) / n)});
  }
  EXPECT_LT(ks, 0.003) << ks;
}

TEST(CounterNormal, MatchesDoublePrecisionBoxMullerOnTheSameBits) {
  const uint64_t key = 99;
  const int64_t n = 4096;
  std::vector<float> z(static_cast<size_t>(n));
  counter_normal(z.data(), n, 0, key, 2.5f);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t w = moejet::kernels::counter_word(key, static_cast<uint64_t>(i / 2));
    const double u1 = double((w >> 40) + 1) / 16777216.0, u2 = double((w >> 8) & 0xffffff) / 16777216.0;
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * M_PI * u2;
    const double ref = 2.5 * (i % 2 == 0 ? r * std::cos(a) : r * std::sin(a));
    worst = std::max(worst, std::abs(ref - z[static_cast<size_t>(i)]));
  }
  EXPECT_LT(worst, 2.5 * 5e-6) << worst;
}

TEST(CounterNormal, ValuesDependOnlyOnKeyAndIndexNotOnTheSplit) {
  const int64_t n = 1001;
  std::vector<float> whole(n), parts(n), other(n);
  counter_normal(whole.data(), n, 0, 7, 1.0f);
  // Pieces starting at odd and even indices, shorter and longer than a block of pairs.
  const int64_t cuts[] = {0, 1, 4, 5, 37, 500, 999, 1001};
  for (size_t c = 0; c + 1 < std::size(cuts); ++c) {
    counter_normal(parts.data() + cuts[c], cuts[c + 1] - cuts[c], static_cast<uint64_t>(cuts[c]), 7, 1.0f);
  }
  EXPECT_EQ(whole, parts);
  counter_normal(other.data(), n, 0, 8, 1.0f);
  int64_t same = 0;
  for (int64_t i = 0; i < n; ++i) {
    same += whole[i] == other[i];
  }
  EXPECT_EQ(same, 0) << "another key gives another stream";
  counter_normal(other.data(), 0, 0, 7, 1.0f);  // nothing to do, nothing written
  EXPECT_NE(other[0], whole[0]);
}

TEST(CounterNormal, KeysFromTorchsGeneratorFollowManualSeed) {
  torch::manual_seed(3);
  const uint64_t a = moejet::kernels::draw_counter_key(), b = moejet::kernels::draw_counter_key();
  torch::manual_seed(3);
  EXPECT_EQ(moejet::kernels::draw_counter_key(), a);
  EXPECT_NE(a, b);
}
