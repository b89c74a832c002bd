// Mobile V-MoE: per-image routing and its MoE blocks.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/kernels/precision.h"
#include "moejet/models/vit.h"
#include "moejet/moe/expert_mlp.h"
#include "moejet/moe/per_image_moe.h"
#include "moejet/train/trainer.h"
#include "test_util.h"

using namespace moejet;

namespace {

models::VitConfig mobile_vmoe(int64_t experts, int64_t k) {
  auto c = moejet::testing::tiny_vit();
  c.num_classes = 6;
  c.depth = 3;
  c.class_token = false;
  c.global_pool = "avg";
  c.moe.last = 2;
  auto& o = c.moe.set<moe::PerImageMoeOptions>();
  o.num_experts = experts;
  o.top_k = k;
  o.mlp_ratio = 2.0;
  o.aux_loss_weight = 0.0;
  return c;
}

}  // namespace

TEST(PerImageMoe, EachImageUsesExactlyItsKExpertsInEveryMoeBlock) {
  torch::manual_seed(0);
  models::VisionTransformer m(mobile_vmoe(5, 2));
  m->eval();
  auto x = torch::randn({7, 1, 8, 8});
  auto logits = m->forward(x);
  const auto& r = m->last_routing;
  ASSERT_EQ(r.experts.sizes(), (std::vector<int64_t>{7, 2}));
  for (int64_t b = 0; b < 7; ++b) {
    EXPECT_NE(r.experts[b][0].item<int64_t>(), r.experts[b][1].item<int64_t>());
    // The chosen experts are the two largest gates, best first.
    auto order = std::get<1>(torch::softmax(r.logits[b], 0).sort(0, true));
    EXPECT_EQ(r.experts[b][0].item<int64_t>(), order[0].item<int64_t>());
    EXPECT_EQ(r.experts[b][1].item<int64_t>(), order[1].item<int64_t>());
  }
  // The MoE block output equals sum_j gate_j * expert_j(x_b), image by image.
  auto layer = std::dynamic_pointer_cast<moe::PerImageMoe>(m->moe_layer_list[0].second);
  ASSERT_TRUE(layer);
  auto tokens = torch::randn({7, 4, 16});
  auto y = layer->forward(tokens);
  for (int64_t b = 0; b < 7; ++b) {
    auto expect = torch::zeros({4, 16});
    for (int64_t j = 0; j < 2; ++j) {
      auto ids = r.experts[b].narrow(0, j, 1);
      expect += r.weights[b][j] * layer->experts->forward(tokens[b].unsqueeze(0), ids)[0];
    }
    EXPECT_TRUE(moejet::testing::all_close(y[b], expect, 1e-5, 1e-6)) << "image " << b;
  }
}

TEST(PerImageMoe, ExpertsNoImageChoseAreNeverRead) {
  torch::manual_seed(1);
  models::VisionTransformer m(mobile_vmoe(6, 1));
  m->eval();
  auto x = torch::randn({1, 1, 8, 8});
  m->forward(x);
  const int64_t chosen = m->last_routing.experts[0][0].item<int64_t>();
  {
    torch::NoGradGuard ng;
    for (auto& entry : m->moe_layer_list) {
      auto g = entry.second->expert_groups()[0].second;
      for (int64_t e = 0; e < 6; ++e) {
        if (e != chosen) {
          g->fc1_weight[e].fill_(std::numeric_limits<float>::quiet_NaN());
          g->fc2_weight[e].fill_(std::numeric_limits<float>::quiet_NaN());
        }
      }
    }
  }
  auto out = m->forward(x);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << "a non-chosen expert was computed";
  // A computed-then-discarded expert would still send 0 * NaN = NaN back into the tokens.
  out.sum().backward();
  EXPECT_TRUE(torch::isfinite(m->patch_embed->proj->weight.grad()).all().item<bool>());
  // FLOPs per image count k of the E experts.
  double moe_macs = 0;
  for (auto& [name, macs] : m->macs_by_layer()) {
    if (name == "blocks.2.mlp")
      moe_macs = macs;
  }
  EXPECT_DOUBLE_EQ(moe_macs, 2.0 * 4 * 16 * 32);  // tokens * D * H * 2 (fc1 + fc2), one expert
}

TEST(PerImageMoe, SuperClassLossTrainsTheRouter) {
  torch::manual_seed(2);
  models::VisionTransformer m(mobile_vmoe(3, 1));
  m->train();
  auto x = torch::randn({8, 1, 8, 8});
  m->forward(x);
  auto super_labels = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1}, torch::kLong);
  auto loss = torch::nn::functional::cross_entropy(m->last_routing.logits, super_labels);
  loss.backward();
  ASSERT_TRUE(m->router->fc->weight.grad().defined());
  EXPECT_GT(m->router->fc->weight.grad().abs().sum().item<double>(), 0.0);
  // Gradients flow back through the dense blocks below the router too.
  EXPECT_GT(m->block_list[0]->attn->qkv->weight.grad().abs().sum().item<double>(), 0.0);
  // Classification loss alone also reaches the router, through the gate weights (end to end).
  m->zero_grad();
  auto logits = m->forward(x);
  torch::nn::functional::cross_entropy(logits, torch::randint(0, 6, {8}, torch::kLong)).backward();
  EXPECT_GT(m->router->fc->weight.grad().abs().sum().item<double>(), 0.0);
}

TEST(PerImageMoe, BatchedRunMatchesImageByImage) {
  torch::manual_seed(3);
  models::VisionTransformer m(mobile_vmoe(4, 1));
  m->eval();
  auto x = torch::randn({5, 1, 8, 8});
  auto all = m->forward(x);
  for (int64_t b = 0; b < 5; ++b) {
    auto one = m->forward(x.narrow(0, b, 1));
    EXPECT_TRUE(moejet::testing::all_close(one[0], all[b], 1e-5, 1e-6)) << b;
  }
}

TEST(ExpertMlp, ConsecutiveExpertIdsAreAViewWithTheSameResultAsAGather) {
  torch::manual_seed(5);
  moe::ExpertMlp experts(5, 8, 16, 0.0, "trunc_normal");
  experts->eval();
  auto x = torch::randn({2, 3, 8});
  torch::NoGradGuard no_grad;
  // Every expert on x[0] and on x[1]: the reference for any expert id.
  auto on0 = experts->forward(x[0].expand({5, 3, 8}).contiguous());
  auto on1 = experts->forward(x[1].expand({5, 3, 8}).contiguous());
  // Ids 2, 3 are consecutive (the weights are narrowed), 3, 1 are not (gathered).
  EXPECT_TRUE(torch::allclose(experts->forward(x, torch::tensor({2, 3})), torch::stack({on0[2], on1[3]}), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(experts->forward(x, torch::tensor({3, 1})), torch::stack({on0[3], on1[1]}), 1e-5, 1e-6));
  // One expert, as at batch 1 (the single-expert product takes the dense layers' kernel).
  EXPECT_TRUE(
      torch::allclose(experts->forward(x.narrow(0, 0, 1), torch::tensor({4})), on0[4].unsqueeze(0), 1e-5, 1e-6));
}

TEST(ExpertMlp, Bf16MatchesFp32WithFp32GradientsForTheMasterWeights) {
  // In bf16 the hidden layer stays bf16 (GELU and dropout on bf16, its gradient bf16): the
  // output and every gradient still agree with fp32 to bf16's precision, and come back fp32.
  torch::manual_seed(8);
  moe::ExpertMlp experts(4, 32, 64, 0.0, "trunc_normal");
  auto x0 = torch::randn({4, 10, 32});
  auto gy = torch::randn({4, 10, 32});
  auto run = [&](kernels::Precision p) {
    kernels::PrecisionScope scope(p);
    experts->zero_grad();
    auto x = x0.clone().requires_grad_(true);
    auto y = experts->forward(x);
    y.backward(gy);
    return std::vector<torch::Tensor>{y.detach(),
                                      x.grad(),
                                      experts->fc1_weight.grad().clone(),
                                      experts->fc1_bias.grad().clone(),
                                      experts->fc2_weight.grad().clone(),
                                      experts->fc2_bias.grad().clone()};
  };
  const auto ref = run(kernels::Precision::fp32), bf = run(kernels::Precision::bf16);
  const char* names[] = {"y", "dx", "dW1", "db1", "dW2", "db2"};
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(bf[i].scalar_type(), torch::kFloat) << names[i];
    const double err = (bf[i] - ref[i]).abs().max().item<double>(), scale = ref[i].abs().max().item<double>();
    EXPECT_LT(err, 0.03 * scale) << names[i];
  }
  // With dropout, in training: the same seed, the same mask in both precisions.
  moe::ExpertMlp dropped(4, 32, 64, 0.2, "trunc_normal");
  auto masked = [&](kernels::Precision p) {
    kernels::PrecisionScope scope(p);
    torch::manual_seed(3);
    return dropped->forward(x0).detach();
  };
  const auto d32 = masked(kernels::Precision::fp32), d16 = masked(kernels::Precision::bf16);
  EXPECT_LT((d16 - d32).abs().max().item<double>(), 0.03 * d32.abs().max().item<double>());
}

TEST(ExpertMlp, GroupedRowsMatchEachExpertOnItsOwnRowsForwardAndBackward) {
  torch::manual_seed(6);
  moe::ExpertMlp experts(4, 8, 16, 0.0, "trunc_normal");
  // Three experts' rows in the order listed (3, then 0 with no rows, then 1): uneven counts, as
  // per-image routing makes them.
  const std::vector<int64_t> ids{3, 0, 1}, rows{5, 0, 2};
  auto x = torch::randn({7, 8}, torch::requires_grad());
  auto grouped = experts->forward_groups(x, ids, rows);
  ASSERT_EQ(grouped.sizes(), x.sizes());
  auto gy = torch::randn_like(grouped);
  grouped.backward(gy);
  const auto gx = x.grad().clone(), gw1 = experts->fc1_weight.grad().clone(), gb2 = experts->fc2_bias.grad().clone();
  x.mutable_grad().reset();
  experts->zero_grad();
  // Reference: each expert's timm Mlp on its rows, in plain tensor ops.
  auto mlp = [&](const torch::Tensor& rows_of, int64_t e) {
    auto h = torch::gelu(torch::nn::functional::linear(rows_of, experts->fc1_weight[e], experts->fc1_bias[e]));
    return torch::nn::functional::linear(h, experts->fc2_weight[e], experts->fc2_bias[e]);
  };
  auto ref = torch::cat({mlp(x.narrow(0, 0, 5), 3), mlp(x.narrow(0, 5, 2), 1)});
  EXPECT_TRUE(torch::allclose(grouped, ref, 1e-5, 1e-6));
  ref.backward(gy);
  EXPECT_TRUE(torch::allclose(gx, x.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(gw1, experts->fc1_weight.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(gb2, experts->fc2_bias.grad(), 1e-5, 1e-6));
  // Experts with no rows get no gradient: expert 0 and 2 rows of the weights stay zero.
  EXPECT_EQ(gw1[0].abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(gw1[2].abs().sum().item<float>(), 0.0f);
  EXPECT_GT(gw1[3].abs().sum().item<float>(), 0.0f);
  // Counts that do not cover x, or an unknown expert, are errors naming the sizes.
  EXPECT_THROW(experts->forward_groups(x, ids, {5, 0, 1}), c10::Error);
  EXPECT_THROW(experts->forward_groups(x, {3, 7}, {5, 2}), c10::Error);
}
