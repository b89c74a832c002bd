#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "moejet/moe/topk_moe.h"
#include "test_util.h"

namespace {

using moejet::moe::TopKMoe;
using moejet::moe::TopKMoeOptions;
using moejet::testing::all_close;

// A capacity factor at which every expert can take every token of an image: nothing is dropped.
constexpr double kNoLimit = 1e9;

// Experts of width 4 with 6 hidden units (make_layer's default dim).
TopKMoeOptions small_options(int64_t e = 4, int64_t k = 2, double capacity_factor = 1.0) {
  TopKMoeOptions o;
  o.mlp_ratio = 1.5;
  o.num_experts = e;
  o.top_k = k;
  o.capacity_factor = capacity_factor;
  return o;
}

std::shared_ptr<TopKMoe> make_layer(const TopKMoeOptions& o, int64_t dim = 4) {
  auto layer = std::make_shared<TopKMoe>(o, dim);
  layer->record_routing = true;
  layer->eval();
  return layer;
}

// Tokens whose feature 0 is large all prefer expert 0 (router row 0 reads feature 0, the other
// rows are zero); the gate of expert 0 grows with feature 0.
torch::Tensor prefer_expert0(TopKMoe& layer, const torch::Tensor& feature0) {
  torch::NoGradGuard no_grad;
  layer.router->weight.zero_();
  layer.router->weight[0][0] = 5.0;
  auto x = torch::randn({feature0.size(0), feature0.size(1), layer.dim});
  x.select(2, 0).copy_(feature0);
  return x;
}

TEST(TopKMoe, OutputShapeGatesAndStats) {
  auto o = small_options();
  o.mlp_ratio = 2.0;
  auto layer = make_layer(o, /*dim=*/8);
  auto x = torch::randn({2, 10, 8});
  auto y = layer->forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(all_close(layer->last_gates.sum(-1), torch::ones({2, 10})));
  EXPECT_GE(layer->last_gates.min().item<double>(), 0.0);
  EXPECT_EQ(layer->last_dispatch.sizes(), (torch::IntArrayRef{2, 10, 4, layer->capacity(10)}));
  const auto& s = layer->last_stats;
  ASSERT_EQ(s.expert_load.sizes(), torch::IntArrayRef{4});
  EXPECT_NEAR(s.expert_load.sum().item<double>(), 1.0, 1e-12);
  EXPECT_GT(s.dispatch_entropy, 0.0);
  EXPECT_LE(s.dispatch_entropy, std::log(4.0) + 1e-6);
  EXPECT_GE(s.dropped_fraction, 0.0);
  EXPECT_LT(s.dropped_fraction, 1.0);
  EXPECT_EQ(layer->last_aux_loss.dim(), 0);
  EXPECT_EQ(layer->kind(), "topk");
}

TEST(TopKMoe, ExactlyKExpertsPerTokenWhenUnlimited) {
  auto o = small_options(/*e=*/5, /*k=*/3, /*capacity_factor=*/kNoLimit);
  auto layer = make_layer(o);
  auto x = torch::randn({3, 7, 4});
  {
    torch::NoGradGuard no_grad;
    layer->router->weight.normal_(0, 1);  // spread the gates so top-k has no near-ties
  }
  layer->forward(x);
  auto d = layer->last_dispatch;
  ASSERT_EQ(d.size(3), 7);  // C = N
  auto per_expert = d.sum(3);
  EXPECT_TRUE(per_expert.le(1).all().item<bool>());
  EXPECT_TRUE(per_expert.sum(-1).eq(3).all().item<bool>());
  // The chosen experts are the top-3 gates of each token.
  auto top = std::get<1>(layer->last_gates.topk(3, -1));
  auto expected = torch::zeros({3, 7, 5}).scatter_(2, top, 1.0);
  EXPECT_TRUE(per_expert.equal(expected));
  // Every buffer slot holds at most one token.
  EXPECT_TRUE(d.sum(1).le(1).all().item<bool>());
  EXPECT_DOUBLE_EQ(layer->last_stats.dropped_fraction, 0.0);
}

TEST(TopKMoe, CapacityKeepsEarliestTokensByPosition) {
  auto layer = make_layer(small_options(/*e=*/4, /*k=*/1, /*capacity_factor=*/1.5));
  const int64_t c = layer->capacity(8);
  ASSERT_EQ(c, 3);  // ceil(1 * 8 * 1.5 / 4)
  auto x = prefer_expert0(*layer, 1 + torch::rand({2, 8}));
  torch::NoGradGuard no_grad;
  auto y = layer->forward(x);
  auto d = layer->last_dispatch;
  EXPECT_EQ(d.narrow(2, 1, 3).sum().item<double>(), 0.0);  // nothing reaches experts 1..3
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t n = 0; n < 8; ++n) {
      if (n < c) {
        EXPECT_EQ(d[b][n][0][n].item<double>(), 1.0) << b << "," << n;  // slot = position
        EXPECT_GT(y[b][n].abs().sum().item<double>(), 0.0);
      } else {
        EXPECT_EQ(d[b][n].sum().item<double>(), 0.0) << b << "," << n;
        EXPECT_TRUE(y[b][n].eq(0).all().item<bool>()) << "dropped token " << b << "," << n;
      }
    }
  }
  EXPECT_NEAR(layer->last_stats.dropped_fraction, 5.0 / 8.0, 1e-12);
  EXPECT_TRUE(all_close(layer->last_stats.expert_load, torch::tensor({1.0, 0.0, 0.0, 0.0}, torch::kDouble), 0, 0));
}

TEST(TopKMoe, BatchPriorityKeepsMostConfidentTokens) {
  auto o = small_options(/*e=*/4, /*k=*/1, /*capacity_factor=*/1.5);
  o.batch_priority = true;
  auto layer = make_layer(o);
  // Distinct confidences in a scrambled order, so "highest gate" differs from "earliest".
  auto feature0 = torch::stack({torch::tensor({1.1f, 1.9f, 1.2f, 1.5f, 1.3f, 1.8f, 1.0f, 1.7f}),
                                torch::tensor({1.6f, 1.0f, 1.4f, 1.2f, 1.9f, 1.1f, 1.3f, 1.5f})});
  auto x = prefer_expert0(*layer, feature0);
  torch::NoGradGuard no_grad;
  auto y = layer->forward(x);
  auto d = layer->last_dispatch;
  ASSERT_EQ(d.size(3), 3);
  auto kept = d.select(2, 0).sum(-1);  // [B, N]
  auto expected = torch::tensor({{0., 1., 0., 0., 0., 1., 0., 1.}, {1., 0., 0., 0., 1., 0., 0., 1.}});
  EXPECT_TRUE(kept.equal(expected)) << kept;
  // Slots are filled in confidence order: the most confident token of each image takes slot 0.
  EXPECT_EQ(d[0][1][0][0].item<double>(), 1.0);
  EXPECT_EQ(d[0][5][0][1].item<double>(), 1.0);
  EXPECT_EQ(d[0][7][0][2].item<double>(), 1.0);
  EXPECT_EQ(d[1][4][0][0].item<double>(), 1.0);
  EXPECT_EQ(d[1][0][0][1].item<double>(), 1.0);
  EXPECT_EQ(d[1][7][0][2].item<double>(), 1.0);
  auto dropped_rows = y.abs().sum(-1).masked_select(expected.eq(0));
  EXPECT_TRUE(dropped_rows.eq(0).all().item<bool>());
  EXPECT_TRUE(y.abs().sum(-1).masked_select(expected.eq(1)).gt(0).all().item<bool>());
}

TEST(TopKMoe, FirstChoicesFillCapacityBeforeSecondChoices) {
  auto layer = make_layer(small_options(/*e=*/4, /*k=*/2, /*capacity_factor=*/1.0));
  ASSERT_EQ(layer->capacity(8), 4);  // ceil(2 * 8 / 4)
  // Tokens 0..3 rank experts (0, 1, ...), tokens 4..7 rank (1, 0, ...). Served token by token,
  // the second choices of tokens 0..3 would fill expert 1 before tokens 4..7 get there.
  auto x = torch::randn({2, 8, 4});
  {
    torch::NoGradGuard no_grad;
    x.select(2, 0).fill_(1.0);
    x.narrow(1, 4, 4).select(2, 0).fill_(-1.0);
    x.select(2, 1).fill_(1.0);
    auto w = layer->router->weight;
    w.zero_();
    w[0][0] = 2.0, w[0][1] = 1.0;   // logit 3 for tokens 0..3, -1 for 4..7
    w[1][0] = -2.0, w[1][1] = 1.0;  // logit -1 for tokens 0..3, 3 for 4..7
    w[2][1] = -5.0, w[3][1] = -5.0;
  }
  layer->forward(x);
  auto kept = layer->last_dispatch.sum(3);  // [B, N, E]
  auto first = torch::tensor({1., 1., 1., 1., 0., 0., 0., 0.});
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(kept[b].select(1, 0).equal(first)) << kept[b];
    EXPECT_TRUE(kept[b].select(1, 1).equal(1 - first)) << kept[b];
    EXPECT_EQ(kept[b].narrow(1, 2, 2).sum().item<double>(), 0.0);
  }
  EXPECT_NEAR(layer->last_stats.dropped_fraction, 0.5, 1e-12);
}

TEST(TopKMoe, ImagesAreRoutedIndependently) {
  auto o = small_options(/*e=*/4, /*k=*/2, /*capacity_factor=*/1.0);
  auto layer = make_layer(o);
  {
    torch::NoGradGuard no_grad;
    layer->router->weight.normal_(0, 1);
  }
  torch::NoGradGuard no_grad;
  auto x = torch::randn({3, 9, 4});
  auto y = layer->forward(x);
  auto x2 = x.clone();
  x2[1] = torch::randn({9, 4}) * 3;
  x2[2] = x[0];  // same tokens as image 0: would compete with it for a batch-wide capacity
  auto y2 = layer->forward(x2);
  EXPECT_TRUE(all_close(y2[0], y[0], 1e-5, 1e-6));
  EXPECT_TRUE(all_close(y2[2], y[0], 1e-5, 1e-6));
  auto alone = layer->forward(x.narrow(0, 0, 1));
  EXPECT_TRUE(all_close(alone[0], y[0], 1e-5, 1e-6));
}

TEST(TopKMoe, GradientMatchesCentralDifferences) {
  auto o = small_options(/*e=*/4, /*k=*/2, /*capacity_factor=*/kNoLimit);
  o.aux_loss_weight = 0.5;
  auto layer = std::make_shared<TopKMoe>(o, /*dim=*/4);
  layer->to(torch::kDouble);
  layer->train();  // noise 0 and no dropout: training mode is still deterministic
  {
    torch::NoGradGuard no_grad;
    layer->router->weight.normal_(0, 1);
    layer->experts->fc1_weight.normal_(0, 0.5);
    layer->experts->fc2_weight.normal_(0, 0.5);
  }
  auto x = torch::randn({2, 5, 4}, torch::kDouble).requires_grad_(true);
  auto w = torch::randn({2, 5, 4}, torch::kDouble);
  auto objective = [&](const torch::Tensor& input) {
    auto y = layer->forward(input);
    return (y * w).sum() + layer->last_aux_loss;
  };
  objective(x).backward();
  auto grad_x = x.grad().clone();
  auto grad_router = layer->router->weight.grad().clone();
  ASSERT_GT(grad_router.abs().sum().item<double>(), 0.0);

  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  auto central = [&](torch::Tensor param, const torch::Tensor& input) {
    auto numeric = torch::zeros_like(param);
    auto flat = param.view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      double v = flat[i].item<double>();
      flat[i] = v + eps;
      double fp = objective(input).item<double>();
      flat[i] = v - eps;
      double fm = objective(input).item<double>();
      flat[i] = v;
      numeric.view(-1)[i] = (fp - fm) / (2 * eps);
    }
    return numeric;
  };
  auto xd = x.detach().clone();
  EXPECT_TRUE(all_close(grad_x, central(xd, xd), 1e-6, 1e-7));
  EXPECT_TRUE(all_close(grad_router, central(layer->router->weight, xd), 1e-6, 1e-7));
}

TEST(TopKMoe, AuxLossIsOneForUniformGates) {
  // Uniform gates give P_e = 1/E, so E * sum_e f_e / E = sum_e f_e = 1 whatever the tie-break.
  auto o = small_options(/*e=*/8, /*k=*/2, /*capacity_factor=*/kNoLimit);
  o.aux_loss_weight = 1.0;
  auto layer = make_layer(o);
  {
    torch::NoGradGuard no_grad;
    layer->router->weight.zero_();
  }
  layer->forward(torch::randn({2, 6, 4}));
  EXPECT_NEAR(layer->last_aux_loss.item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(layer->last_stats.dispatch_entropy, std::log(8.0), 1e-5);
  // Ties go to the lowest expert indices, deterministically: every token picks experts 0 and 1.
  auto per_expert = layer->last_dispatch.sum(torch::IntArrayRef{0, 1, 3});
  EXPECT_TRUE(per_expert.equal(torch::tensor({12., 12., 0., 0., 0., 0., 0., 0.})));

  // The stored loss carries the configured weight.
  o.aux_loss_weight = 0.01;
  auto weighted = make_layer(o);
  {
    torch::NoGradGuard no_grad;
    weighted->router->weight.zero_();
  }
  weighted->forward(torch::randn({2, 6, 4}));
  EXPECT_NEAR(weighted->last_aux_loss.item<double>(), 0.01, 1e-8);
}

TEST(TopKMoe, AuxLossApproachesNumExpertsWhenRoutingCollapses) {
  auto o = small_options(/*e=*/4, /*k=*/1, /*capacity_factor=*/kNoLimit);
  o.aux_loss_weight = 1.0;
  auto layer = make_layer(o);
  auto x = prefer_expert0(*layer, 3 + torch::rand({2, 8}));  // gate of expert 0 > 0.999
  layer->forward(x);
  EXPECT_NEAR(layer->last_aux_loss.item<double>(), 4.0, 0.01);
  EXPECT_LE(layer->last_aux_loss.item<double>(), 4.0);
}

TEST(TopKMoe, RouterNoiseOnlyInTraining) {
  auto o = small_options();
  o.router_noise = 1.0;
  auto layer = make_layer(o);
  auto x = torch::randn({2, 5, 4});
  torch::NoGradGuard no_grad;
  auto y = layer->forward(x);
  EXPECT_TRUE(all_close(layer->last_gates, torch::softmax(layer->router->forward(x), -1)));
  EXPECT_TRUE(layer->forward(x).equal(y));
  layer->train();
  layer->forward(x);
  auto g1 = layer->last_gates;
  layer->forward(x);
  EXPECT_FALSE(all_close(layer->last_gates, g1));
}

TEST(TopKMoe, CapacityAndMacs) {
  TopKMoeOptions o;
  o.num_experts = 8;
  o.top_k = 2;
  TopKMoe layer(o, /*dim=*/192);
  EXPECT_EQ(layer.hidden, 768);
  EXPECT_EQ(layer.capacity(197), 50);  // ceil(2 * 197 / 8) = ceil(49.25)
  layer.options.capacity_factor = kNoLimit;
  EXPECT_EQ(layer.capacity(197), 197);
  layer.options.capacity_factor = 100.0;
  EXPECT_EQ(layer.capacity(197), 197);
  layer.options.capacity_factor = 1e-3;
  EXPECT_EQ(layer.capacity(197), 1);
  EXPECT_DOUBLE_EQ(layer.macs(197), 197.0 * 192 * 8 + 2.0 * 197 * 2 * 192 * 768);
  EXPECT_FALSE(layer.router->bias.defined());
  EXPECT_EQ(layer.router->weight.sizes(), (torch::IntArrayRef{8, 192}));
  auto params = layer.named_parameters();
  EXPECT_TRUE(params.contains("router.weight"));
  EXPECT_TRUE(params.contains("experts.fc1.weight"));
  EXPECT_TRUE(params.contains("experts.fc2.bias"));
}

TEST(TopKMoe, RejectsInvalidOptions) {
  auto bad = [](auto mutate) {
    auto o = small_options();
    mutate(o);
    return o;
  };
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.top_k = 5; }), 4), moejet::ConfigError);
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.top_k = 0; }), 4), moejet::ConfigError);
  EXPECT_THROW(TopKMoe(small_options(), /*dim=*/0), c10::Error);
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.num_experts = 0; }), 4), moejet::ConfigError);
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.router_noise = -1; }), 4), moejet::ConfigError);
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.expert_drop = 1.0; }), 4), moejet::ConfigError);
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.capacity_factor = NAN; }), 4), moejet::ConfigError);
  EXPECT_THROW(TopKMoe(bad([](TopKMoeOptions& o) { o.capacity_factor = 0; }), 4), moejet::ConfigError);
  TopKMoe ok(small_options(), 4);
  EXPECT_THROW(ok.forward(torch::randn({2, 3, 5})), c10::Error);
  EXPECT_THROW(ok.forward(torch::randn({3, 4})), c10::Error);
}

}  // namespace
