#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "moejet/kernels/entmax.h"
#include "test_util.h"

namespace {

using moejet::kernels::entmax15;
using moejet::testing::all_close;

// Reference 1.5-entmax of one row, independent of the sort-based closed form: y_i =
// [x_i / 2 - tau]_+^2 where tau is found by bisection on the monotone sum(y) = 1.
std::vector<double> entmax15_bisect(const std::vector<double>& x) {
  double zmax = -INFINITY;
  for (double v : x) {
    zmax = std::max(zmax, v / 2);
  }
  auto mass = [&](double tau) {
    double s = 0;
    for (double v : x) {
      double t = std::max(v / 2 - tau, 0.0);
      s += t * t;
    }
    return s;
  };
  // mass(zmax - 1) >= 1 (the top entry alone gives 1) and mass(zmax) = 0.
  double lo = zmax - 1, hi = zmax;
  for (int i = 0; i < 200; ++i) {
    double mid = (lo + hi) / 2;
    (mass(mid) > 1 ? lo : hi) = mid;
  }
  double tau = (lo + hi) / 2;
  std::vector<double> y;
  for (double v : x) {
    double t = std::max(v / 2 - tau, 0.0);
    y.push_back(t * t);
  }
  return y;
}

TEST(Entmax15, RowsAreDistributions) {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    auto x = torch::randn({6, 9}, torch::TensorOptions().dtype(dtype)) * 3;
    auto y = entmax15(x);
    EXPECT_EQ(y.scalar_type(), dtype);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_GE(y.min().item<double>(), 0.0);
    EXPECT_TRUE(all_close(y.sum(-1), torch::ones({6}, y.options()), 1e-5, 1e-6));
  }
}

TEST(Entmax15, SparseForPeakedInputs) {
  auto x = torch::tensor({{4.0, 0.5, 0.0, -1.0, 0.2}, {1.0, 1.0, -3.0, -3.0, -3.0}}, torch::kDouble);
  auto y = entmax15(x);
  // Row 0: the peak is more than 2 above everything else (x_i / 2 gap > 1), so it is one-hot.
  EXPECT_TRUE(all_close(y[0], torch::tensor({1.0, 0.0, 0.0, 0.0, 0.0}, torch::kDouble), 0, 0));
  // Row 1: two tied leaders share the mass equally; the rest are exactly zero.
  EXPECT_TRUE(all_close(y[1], torch::tensor({0.5, 0.5, 0.0, 0.0, 0.0}, torch::kDouble), 0, 1e-12));
  // Random peaked rows: the support is strictly smaller than the row, unlike softmax.
  auto r = entmax15(torch::randn({32, 16}) * 4);
  EXPECT_GT(r.eq(0).sum().item<int64_t>(), 0);
  EXPECT_TRUE(r.gt(0).sum(-1).lt(16).all().item<bool>());
  // Constant rows are uniform (the support is the whole row).
  EXPECT_TRUE(all_close(entmax15(torch::full({1, 4}, 7.0)), torch::full({1, 4}, 0.25)));
}

TEST(Entmax15, MatchesBisectionReference) {
  auto x = torch::randn({20, 11}, torch::kDouble) * 2.5;
  x[3] = torch::zeros({11}, torch::kDouble);  // all tied
  x[4][5] = 50.0;                             // one dominant entry
  auto y = entmax15(x);
  for (int64_t i = 0; i < x.size(0); ++i) {
    auto row = x[i].contiguous();
    std::vector<double> v(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
    auto ref = torch::tensor(entmax15_bisect(v), torch::kDouble);
    EXPECT_TRUE(all_close(y[i], ref, 0, 1e-6)) << "row " << i;
  }
  // float agrees with double to float precision.
  EXPECT_TRUE(all_close(entmax15(x.to(torch::kFloat)), y, 1e-4, 1e-5));
}

// d(sum(w * entmax15(x, dim)))/dx by autograd vs. central differences, in double.
void check_gradient(const torch::Tensor& x0, int64_t dim) {
  auto w = torch::randn(x0.sizes(), torch::kDouble);
  auto x = x0.clone().requires_grad_(true);
  (entmax15(x, dim) * w).sum().backward();
  auto analytic = x.grad();
  auto numeric = torch::zeros_like(x0);
  const double eps = 1e-6;
  auto flat = x0.clone().view(-1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    double v = flat[i].item<double>();
    flat[i] = v + eps;
    double fp = (entmax15(flat.view(x0.sizes()), dim) * w).sum().item<double>();
    flat[i] = v - eps;
    double fm = (entmax15(flat.view(x0.sizes()), dim) * w).sum().item<double>();
    flat[i] = v;
    numeric.view(-1)[i] = (fp - fm) / (2 * eps);
  }
  EXPECT_TRUE(all_close(analytic, numeric, 0, 1e-6));
}

TEST(Entmax15, BackwardMatchesCentralDifferences) {
  // Scale 1.5 keeps a mix of in-support and zero entries; a perturbation of 1e-6 is far below
  // the distance to a support change for random inputs.
  auto x = torch::randn({5, 7}, torch::kDouble) * 1.5;
  auto y = entmax15(x);
  ASSERT_GT(y.eq(0).sum().item<int64_t>(), 0) << "want some zeros to exercise the sparse case";
  ASSERT_GT(y.gt(0).sum(-1).gt(1).sum().item<int64_t>(), 0);
  check_gradient(x, -1);
}

TEST(Entmax15, WorksAlongMiddleDimOf3d) {
  auto x = torch::randn({3, 6, 4}, torch::kDouble) * 2;
  auto y = entmax15(x, 1);
  EXPECT_TRUE(all_close(y.sum(1), torch::ones({3, 4}, torch::kDouble), 0, 1e-12));
  auto ref = entmax15(x.transpose(1, 2).contiguous(), -1).transpose(1, 2);
  EXPECT_TRUE(all_close(y, ref, 0, 1e-14));
  check_gradient(x, 1);
}

TEST(Entmax15, RejectsBadInput) {
  EXPECT_THROW(entmax15(torch::zeros({3, 0})), c10::Error);
  EXPECT_THROW(entmax15(torch::zeros({3}, torch::kLong)), c10::Error);
  EXPECT_THROW(entmax15(torch::zeros({3}), 2), c10::Error);
}

}  // namespace

TEST(Entmax15, CpuKernelAgreesWithTheGenericTensorOpsPath) {
  // The row kernel (CPU) and the sort/cumsum path (other devices) must be the same function.
  torch::manual_seed(11);
  for (double scale : {0.1, 1.0, 4.0, 30.0}) {
    auto x = torch::randn({7, 33, 5}, torch::kDouble) * scale;
    for (int64_t dim : {0, 1, 2}) {
      EXPECT_TRUE(moejet::testing::all_close(moejet::kernels::entmax15(x, dim),
                                             moejet::kernels::entmax15_generic(x, dim), 1e-9, 1e-12))
          << "scale " << scale << " dim " << dim;
    }
    auto xf = x.to(torch::kFloat);
    EXPECT_TRUE(moejet::testing::all_close(moejet::kernels::entmax15(xf, 1), moejet::kernels::entmax15_generic(xf, 1),
                                           1e-5, 1e-6));
  }
}

TEST(Entmax15, FloatKernelAndItsBackwardAgreeWithTheGenericPathOnSpheroMoeShapes) {
  // The float kernel is vectorised in blocks of 4 and 8 with scalar tails, and finds tau by
  // Newton steps instead of a sort: rows of every length up to 19, a SpheroMoE combine row (294
  // slots), and cosine logits over temperatures from sharp to flat, forward and backward.
  torch::manual_seed(5);
  std::vector<torch::Tensor> inputs;
  for (int64_t n = 1; n < 20; ++n) {
    inputs.push_back(torch::randn({16, n}) * 2);
  }
  auto keys =
      torch::nn::functional::normalize(torch::randn({64, 192}), torch::nn::functional::NormalizeFuncOptions().dim(-1));
  auto queries =
      torch::nn::functional::normalize(torch::randn({294, 192}), torch::nn::functional::NormalizeFuncOptions().dim(-1));
  for (double temperature : {0.02, 0.1, 0.5, 2.0}) {
    inputs.push_back(torch::matmul(keys, queries.t()) / temperature);
  }
  auto ties = torch::randint(0, 3, {8, 40}).to(torch::kFloat);  // many exactly tied entries
  inputs.push_back(ties);
  for (const auto& x0 : inputs) {
    auto w = torch::randn(x0.sizes());
    auto xa = x0.clone().requires_grad_(true);
    auto xb = x0.clone().requires_grad_(true);
    auto ya = entmax15(xa, 1);
    auto yb = moejet::kernels::entmax15_generic(xb, 1);
    EXPECT_TRUE(all_close(ya, yb, 1e-4, 1e-6)) << "forward, shape " << x0.sizes();
    EXPECT_TRUE(all_close(ya.sum(1), torch::ones({x0.size(0)}), 0, 1e-5));
    (ya * w).sum().backward();
    (yb * w).sum().backward();
    EXPECT_TRUE(all_close(xa.grad(), xb.grad(), 1e-4, 1e-5)) << "backward, shape " << x0.sizes();
  }
}
