#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/kernels/attention.h"
#include "moejet/kernels/onednn_matmul.h"
#include "test_util.h"

namespace k = moejet::kernels;
using moejet::testing::all_close;
using moejet::testing::output_and_grad;

namespace {

// timm's Attention between qkv and proj, as tensor ops in the dtype of qkv: the reference.
torch::Tensor attention_ops(const torch::Tensor& qkv, int64_t heads, double scale) {
  const int64_t B = qkv.size(0), N = qkv.size(1), D = qkv.size(2) / 3;
  auto t = qkv.reshape({B, N, 3, heads, D / heads}).permute({2, 0, 3, 1, 4}).unbind(0);
  auto attn = torch::matmul(t[0], t[1].transpose(-2, -1)).mul(scale).softmax(-1);
  return torch::matmul(attn, t[2]).transpose(1, 2).reshape({B, N, D});
}

double max_error(const torch::Tensor& a, const torch::Tensor& reference) {
  return (a.to(torch::kDouble) - reference).abs().max().item<double>();
}

// Both layouts run on every machine, whichever attention_heads_for picks here.
constexpr k::AttentionHeads kLayouts[] = {k::AttentionHeads::in_place, k::AttentionHeads::copied};

const char* name(k::AttentionHeads layout) {
  return layout == k::AttentionHeads::copied ? "heads copied" : "heads in place";
}

}  // namespace

TEST(Attention, Fp32MatchesTheTensorOpsInDoubleWithGradients) {
  if (!k::onednn_available()) {
    GTEST_SKIP() << "built without oneDNN";
  }
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(0);
  // ViT-T's heads at batch 2 (rows not a multiple of the vector width), an odd token count with
  // two heads, and one token.
  struct Case {
    int64_t B, N, heads, hd;
  };
  for (const auto& c : std::vector<Case>{{2, 197, 3, 64}, {3, 17, 2, 32}, {2, 1, 4, 16}}) {
    const auto qkv = torch::randn({c.B, c.N, 3 * c.heads * c.hd});
    const auto g = torch::randn({c.B, c.N, c.heads * c.hd});
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.hd));
    ASSERT_TRUE(k::fused_attention(qkv));
    const auto ref = output_and_grad(qkv.to(torch::kDouble), g,
                                     [&](const torch::Tensor& x) { return attention_ops(x, c.heads, scale); });
    for (const auto layout : kLayouts) {
      const auto fused =
          output_and_grad(qkv, g, [&](const torch::Tensor& x) { return k::attention(x, c.heads, scale, layout); });
      EXPECT_EQ(fused.out.scalar_type(), torch::kFloat);
      EXPECT_TRUE(all_close(fused.out, ref.out, 1e-4, 1e-5)) << c.N << " tokens, " << name(layout);
      EXPECT_TRUE(all_close(fused.grad, ref.grad, 1e-3, 1e-4)) << c.N << " tokens, " << name(layout);
    }
  }
  // Scores in the hundreds, where an exp without the row's max taken off would overflow: as
  // close to double as the fp32 tensor ops (whose scores carry the same rounding).
  const auto big = torch::randn({2, 50, 3 * 192}) * 12;
  const auto g = torch::randn({2, 50, 192});
  const auto fused = output_and_grad(big, g, [&](const torch::Tensor& x) { return k::attention(x, 3, 0.125); });
  const auto ops = output_and_grad(big, g, [&](const torch::Tensor& x) { return attention_ops(x, 3, 0.125); });
  const auto ref =
      output_and_grad(big.to(torch::kDouble), g, [&](const torch::Tensor& x) { return attention_ops(x, 3, 0.125); });
  ASSERT_TRUE(torch::isfinite(fused.out).all().item<bool>() && torch::isfinite(fused.grad).all().item<bool>());
  EXPECT_LE(max_error(fused.out, ref.out), 2 * max_error(ops.out, ref.out) + 1e-6);
  EXPECT_LE(max_error(fused.grad, ref.grad), 2 * max_error(ops.grad, ref.grad) + 1e-6);
}

TEST(Attention, Bf16IsAtLeastAsCloseToDoubleAsTheBf16TensorOps) {
  if (!k::onednn_available()) {
    GTEST_SKIP() << "built without oneDNN";
  }
  moejet::testing::ScopedTorchThreads threads(2);
  torch::manual_seed(1);
  const int64_t heads = 3;
  const auto qkv = torch::randn({4, 197, 3 * 192}).to(torch::kBFloat16);
  const auto g = torch::randn({4, 197, 192});
  const double scale = 0.125;
  // The tensor ops this kernel replaced ran every product and the softmax on bf16 tensors.
  const auto ops = output_and_grad(qkv, g, [&](const torch::Tensor& x) { return attention_ops(x, heads, scale); });
  const auto ref = output_and_grad(qkv.to(torch::kDouble), g.to(torch::kBFloat16).to(torch::kDouble),
                                   [&](const torch::Tensor& x) { return attention_ops(x, heads, scale); });
  const double ops_out_err = max_error(ops.out, ref.out), ops_grad_err = max_error(ops.grad, ref.grad);
  for (const auto layout : kLayouts) {
    const auto fused =
        output_and_grad(qkv, g, [&](const torch::Tensor& x) { return k::attention(x, heads, scale, layout); });
    EXPECT_EQ(fused.out.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(fused.grad.scalar_type(), torch::kBFloat16);
    const double out_err = max_error(fused.out, ref.out), grad_err = max_error(fused.grad, ref.grad);
    EXPECT_LE(out_err, ops_out_err * 1.05) << name(layout) << ": " << out_err << ", tensor ops " << ops_out_err;
    EXPECT_LE(grad_err, ops_grad_err * 1.05) << name(layout) << ": " << grad_err << ", tensor ops " << ops_grad_err;
    // And both are bf16-close: a few units in the last place of values of order 1.
    EXPECT_LT(out_err, 0.05);
    EXPECT_LT(grad_err, 0.1 * ref.grad.abs().max().item<double>());
  }
}

// Copied heads are for AMX: there oneDNN runs the batched products of dense heads on its AMX
// kernels, and those of heads in place on one without (3x slower in all, measured). Elsewhere the
// copies buy nothing and bf16 stays in place, as fp32 does everywhere.
TEST(Attention, Bf16CopiesTheHeadsExactlyWhereTheirProductsRunOnAmx) {
  if (!k::onednn_available()) {
    GTEST_SKIP() << "built without oneDNN";
  }
  EXPECT_EQ(k::attention_heads_for(torch::kFloat), k::AttentionHeads::in_place);
  EXPECT_EQ(k::attention_heads_for(torch::kBFloat16),
            k::onednn_amx() ? k::AttentionHeads::copied : k::AttentionHeads::in_place);
  if (!k::onednn_amx()) {
    GTEST_SKIP() << "no AMX here: nothing more to check";
  }
  const auto qkv5 = torch::randn({4, 197, 3, 3, 64}).to(torch::kBFloat16);
  const auto in_place = qkv5.permute({2, 0, 3, 1, 4});
  const auto copied = in_place.contiguous();
  EXPECT_NE(k::onednn_matmul_impl(copied[0], copied[1].transpose(-2, -1)).find("amx"), std::string::npos);
  EXPECT_EQ(k::onednn_matmul_impl(in_place[0], in_place[1].transpose(-2, -1)).find("amx"), std::string::npos);
}

TEST(Attention, OtherDtypesAreLeftToTheTensorOpsAndBadShapesNamed) {
  EXPECT_FALSE(k::fused_attention(torch::randn({2, 5, 12}, torch::kDouble)));
  EXPECT_FALSE(k::fused_attention(torch::randn({2, 12})));
  try {
    k::attention(torch::randn({2, 5, 12}, torch::kDouble), 2, 1.0);
    FAIL() << "double attention ran";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no fused kernel for double"), std::string::npos) << e.what();
  }
  try {
    k::attention(torch::randn({2, 5, 10}), 3, 1.0);
    FAIL() << "qkv of 10 channels split into 3 heads";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 heads, got [2, 5, 10]"), std::string::npos) << e.what();
  }
}

TEST(OnednnMatmul, ScaledProductsIntoStridedFp32AndBf16Outputs) {
  if (!k::onednn_available()) {
    GTEST_SKIP() << "built without oneDNN";
  }
  torch::manual_seed(2);
  const auto a = torch::randn({2, 3, 7, 16}), b = torch::randn({2, 3, 16, 5});
  const auto expected = torch::matmul(a, b) * 0.5;
  for (const auto type : {torch::kFloat, torch::kBFloat16}) {
    // Heads written where they lie in a [B, N, H, hd] tensor.
    auto out = torch::zeros({2, 7, 3, 5}, torch::TensorOptions().dtype(type));
    k::onednn_matmul_out(a.to(type), b.to(type), {}, out.permute({0, 2, 1, 3}), 0.5);
    const double tol = type == torch::kFloat ? 1e-5 : 2e-2;
    EXPECT_TRUE(all_close(out.permute({0, 2, 1, 3}), expected.to(type).to(torch::kFloat), tol, tol));
  }
  auto not_plain = torch::empty({2, 3, 7, 10}).slice(3, 0, 10, 2);
  EXPECT_THROW(k::onednn_matmul_out(a, b, {}, not_plain), c10::Error);
  auto out = torch::empty({2, 3, 7, 5});
  EXPECT_THROW(k::onednn_matmul_out(a, b, torch::zeros({5}), out, 0.5), c10::Error);  // scale and bias
  // A multiplier like out, applied inside the product.
  const auto m = torch::randn({2, 3, 7, 5});
  k::onednn_matmul_out(a, b, {}, out, 1.0, m);
  EXPECT_TRUE(all_close(out, torch::matmul(a, b) * m, 1e-5, 1e-5));
  EXPECT_THROW(k::onednn_matmul_out(a, b, {}, out, 1.0, torch::randn({2, 3, 7, 4})), c10::Error);
}
