#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/system.h"
#include "moejet/kernels/blas.h"
#include "moejet/kernels/expert_bmm.h"
#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/precision.h"
#include "test_util.h"

namespace {

using moejet::kernels::batched_matmul;
using moejet::kernels::expert_bmm;
using moejet::testing::all_close;

TEST(ExpertBmm, DirectBlasIsFoundWhereLibtorchUsesOpenBlas) {
  // Otherwise every expert GEMM silently takes the slower torch::bmm path.
  if (moejet::system_info().blas != "OpenBLAS") {
    GTEST_SKIP() << "BLAS here: " << moejet::system_info().blas;
  }
  EXPECT_NE(moejet::kernels::blas_sgemm(), nullptr);
  moejet::kernels::SingleThreadedBlas guard;
  EXPECT_TRUE(guard.active());
}

TEST(ExpertBmm, MatchesTorchForEveryOperandLayoutWithAndWithoutBias) {
  torch::manual_seed(0);
  const int64_t E = 5, M = 7, K = 6, N = 3;
  auto a_rm = torch::randn({E, M, K});
  auto a_cm = torch::randn({E, K, M}).transpose(1, 2);             // each matrix column-major
  auto a_pad = torch::randn({E, M, K + 4}).narrow(2, 1, K);        // row-major, leading dim K + 4
  auto a_slots = torch::randn({M, E, K}).transpose(0, 1);          // [B, E, D] slots seen per expert
  auto a_odd = torch::randn({E, M, 2 * K}).slice(2, 0, 2 * K, 2);  // neither layout: copied
  auto b_rm = torch::randn({E, K, N});
  auto b_cm = torch::randn({E, N, K}).transpose(1, 2);
  auto b_bcast = torch::randn({1, K, N}).expand({E, K, N});  // batch stride 0
  auto bias = torch::randn({E, N});
  for (const auto& a : {a_rm, a_cm, a_pad, a_slots, a_odd}) {
    for (const auto& b : {b_rm, b_cm, b_bcast}) {
      for (bool per_matrix : {true, false}) {
        auto ref = torch::bmm(a, b);
        EXPECT_TRUE(all_close(expert_bmm(a, b, torch::Tensor(), per_matrix), ref, 1e-5, 1e-5))
            << a.strides() << " x " << b.strides();
        EXPECT_TRUE(all_close(expert_bmm(a, b, bias, per_matrix), ref + bias.unsqueeze(1), 1e-5, 1e-5));
      }
    }
  }
}

TEST(ExpertBmm, HandlesDegenerateSizesDoublesAndBadShapes) {
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 4, 3}, {4, 1, 3}, {4, 3, 1}, {1, 1, 1}, {3, 0, 2}}) {
    auto a = torch::randn({2, M, K}), b = torch::randn({2, K, N});
    EXPECT_TRUE(all_close(expert_bmm(a, b), torch::bmm(a, b))) << M << " " << K << " " << N;
  }
  auto ad = torch::randn({3, 4, 5}, torch::kDouble), bd = torch::randn({3, 5, 2}, torch::kDouble);
  EXPECT_TRUE(all_close(expert_bmm(ad, bd), torch::bmm(ad, bd), 0, 1e-12));  // torch path
  EXPECT_THROW(expert_bmm(torch::randn({2, 3, 4}), torch::randn({2, 5, 6})), c10::Error);
  EXPECT_THROW(expert_bmm(torch::randn({2, 3, 4}), torch::randn({2, 4, 6}), torch::randn({2, 5})), c10::Error);
}

TEST(ExpertBmm, ComputeOutputIsTheFp32ResultRoundedToBf16) {
  // ProductOut::compute: an expert MLP's bf16 hidden layer. With oneDNN, the bias is added to the
  // fp32 products before the one rounding, so the result is the fp32 one rounded. ATen's bf16 bmm
  // (no oneDNN) rounds its products to bf16 itself: the bias then adds a second rounding.
  torch::manual_seed(2);
  const bool onednn = moejet::kernels::onednn_available();
  for (int64_t E : {1, 4}) {
    auto a = torch::randn({E, 9, 24}).to(torch::kBFloat16), b = torch::randn({E, 24, 40}).to(torch::kBFloat16);
    auto bias = torch::randn({E, 40});
    const auto exact = (torch::bmm(a.to(torch::kDouble), b.to(torch::kDouble)) + bias.to(torch::kDouble).unsqueeze(1));
    for (const auto& bi : {bias, torch::Tensor()}) {
      const auto ref = bi.defined() ? exact : exact - bias.to(torch::kDouble).unsqueeze(1);
      auto y = expert_bmm(a, b, bi, true, moejet::kernels::ProductOut::compute);
      ASSERT_EQ(y.scalar_type(), torch::kBFloat16) << E;
      auto y32 = expert_bmm(a, b, bi);
      ASSERT_EQ(y32.scalar_type(), torch::kFloat);
      // One bf16 rounding is 2^-9 relative. ATen's path rounds the products
      // before the bias: up to 2^-9 |p| more, absolute (|p| < 20 here).
      EXPECT_TRUE(all_close(y.to(torch::kDouble), ref, 1.0 / 256, onednn ? 1e-3 : 0.05))
          << E << " bias " << bi.defined();
      if (onednn) {
        EXPECT_TRUE(all_close(y32.to(torch::kDouble), ref, 1e-5, 1e-5));
        EXPECT_TRUE(torch::equal(y, y32.to(torch::kBFloat16))) << E << " bias " << bi.defined();
      }
    }
  }
  // fp32 operands outside a bf16 scope: compute is fp32.
  auto a = torch::randn({3, 5, 6}), b = torch::randn({3, 6, 2});
  EXPECT_EQ(expert_bmm(a, b, {}, true, moejet::kernels::ProductOut::compute).scalar_type(), torch::kFloat);
}

TEST(ExpertBmm, BatchedMatmulGradientsMatchTorchBmm) {
  torch::manual_seed(1);
  auto a0 = torch::randn({4, 6, 5}), b0 = torch::randn({4, 5, 3}), w = torch::randn({4, 6, 3});
  auto a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
  auto ra = a0.clone().requires_grad_(true), rb = b0.clone().requires_grad_(true);
  (batched_matmul(a, b) * w).sum().backward();
  (torch::bmm(ra, rb) * w).sum().backward();
  EXPECT_TRUE(all_close(a.grad(), ra.grad()));
  EXPECT_TRUE(all_close(b.grad(), rb.grad()));
  // Only the inputs that need a gradient get one.
  auto c = b0.clone().requires_grad_(true);
  batched_matmul(a0, c).sum().backward();
  EXPECT_TRUE(c.grad().defined());
}

// Soft routing's slots, [E, B, D] viewed out of [B, E, D]: rounded as to_bf16 rounds them; where
// oneDNN has AMX a dense batch, which its AMX kernels take and the strided one is not given to.
TEST(ExpertBmm, Bf16BatchOperandIsDenseWhereOnednnHasAmx) {
  namespace k = moejet::kernels;
  torch::manual_seed(2);
  const auto slots = torch::randn({32, 12, 64}).permute({1, 0, 2});
  const auto op = k::bf16_batch_operand(slots);
  EXPECT_EQ(op.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(op, slots.to(torch::kBFloat16)));
  EXPECT_EQ(op.is_contiguous(), k::onednn_amx());
  if (k::onednn_amx()) {
    const auto w = torch::randn({12, 64, 48}).to(torch::kBFloat16);
    EXPECT_NE(k::onednn_matmul_impl(op, w).find("amx"), std::string::npos);
    EXPECT_EQ(k::onednn_matmul_impl(slots.to(torch::kBFloat16), w).find("amx"), std::string::npos)
        << "oneDNN now runs the strided batch on AMX: the copy may no longer be needed";
  }
  // The batched product of that view and its gradients, in bf16: within bf16 rounding of fp32.
  k::PrecisionScope scope(k::Precision::bf16);
  auto base = torch::randn({32, 12, 64}).requires_grad_(true);
  auto b = torch::randn({12, 64, 8}).requires_grad_(true);
  const auto g = torch::randn({12, 32, 8});
  const auto a = base.permute({1, 0, 2});
  const auto y = batched_matmul(a, b);
  (y * g).sum().backward();
  const auto a0 = a.detach(), b0 = b.detach();
  EXPECT_TRUE(all_close(y, torch::bmm(a0, b0), 2e-2, 1e-1));
  EXPECT_TRUE(all_close(base.grad().permute({1, 0, 2}), torch::bmm(g, b0.transpose(1, 2)), 2e-2, 1e-1));
  EXPECT_TRUE(all_close(b.grad(), torch::bmm(a0.transpose(1, 2), g), 2e-2, 1e-1));
}

}  // namespace
