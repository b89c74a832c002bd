// Soft MoE and SpheroMoE: shapes, double-precision gradient checks, batch/token permutation
// properties, unit-norm projections, and their integration into the ViT (keys, counts, JSON).

#include <torch/torch.h>

#include "moejet/io/state_dict.h"
#include "moejet/models/vit.h"
#include "moejet/moe/soft_moe.h"
#include "moejet/moe/sphero_moe.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::moe;

namespace {

// Both small layers read tokens of width kSoftDim = 6.
constexpr int64_t kSoftDim = 6;

SpheroMoeOptions small_sphero(const std::string& combine = "entmax15") {
  SpheroMoeOptions o;
  o.core_experts = 2;
  o.core_mlp_ratio = 2.0;  // 12 hidden units
  o.universal_experts = 3;
  o.universal_mlp_ratio = 0.5;  // 3
  o.slots_per_expert = 2;
  o.noise_mult = 0.0;
  o.combine = combine;
  return o;
}

SoftMoeOptions small_soft() {
  SoftMoeOptions o;
  o.mlp_ratio = 2.0;
  o.num_experts = 3;
  o.slots_per_expert = 2;
  return o;
}

// Central differences of sum(w * f(t)) with respect to every element of `t`, against autograd.
::testing::AssertionResult grad_check(torch::Tensor t, const std::function<torch::Tensor()>& f, double tol = 1e-6) {
  torch::manual_seed(7);
  auto w = torch::randn_like(f().detach());
  auto loss = (f() * w).sum();
  auto g = torch::autograd::grad({loss}, {t})[0];
  torch::NoGradGuard ng;
  auto flat = t.view(-1);  // parameters and inputs here are contiguous
  const double h = 1e-6;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    double orig = flat[i].item<double>();
    flat[i] = orig + h;
    double up = (f() * w).sum().item<double>();
    flat[i] = orig - h;
    double down = (f() * w).sum().item<double>();
    flat[i] = orig;
    double num = (up - down) / (2 * h);
    double ana = g.reshape(-1)[i].item<double>();
    if (std::abs(num - ana) > tol * std::max(1.0, std::abs(num))) {
      return ::testing::AssertionFailure() << "element " << i << ": numeric " << num << " vs autograd " << ana;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

TEST(SoftMoe, ShapesStatsAndDoubleGradient) {
  SoftMoe layer(small_soft(), kSoftDim);
  layer.to(torch::kDouble);
  layer.eval();
  auto x = torch::randn({2, 5, 6}, torch::kDouble).requires_grad_();
  auto y = layer.forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_NEAR(layer.last_stats.expert_load.sum().item<double>(), 1.0, 1e-6);
  EXPECT_EQ(layer.last_stats.expert_load.numel(), 3);
  EXPECT_TRUE(grad_check(x, [&] { return layer.forward(x); }));
  EXPECT_TRUE(grad_check(layer.phi, [&] { return layer.forward(x); }));
  EXPECT_TRUE(grad_check(layer.experts->fc1_weight, [&] { return layer.forward(x); }));
}

TEST(SpheroMoe, DoubleGradientThroughEntmaxAndBothPaths) {
  for (std::string combine : {"entmax15", "softmax"}) {
    SpheroMoe layer(small_sphero(combine), kSoftDim);
    layer.to(torch::kDouble);
    layer.eval();
    auto x = torch::randn({2, 5, 6}, torch::kDouble).requires_grad_();
    EXPECT_EQ(layer.forward(x).sizes(), x.sizes());
    EXPECT_TRUE(grad_check(x, [&] { return layer.forward(x); })) << combine;
    EXPECT_TRUE(grad_check(layer.phi, [&] { return layer.forward(x); })) << combine;
    EXPECT_TRUE(grad_check(layer.dispatch_temperature, [&] { return layer.forward(x); })) << combine;
    EXPECT_TRUE(grad_check(layer.combine_temperature, [&] { return layer.forward(x); })) << combine;
    EXPECT_TRUE(grad_check(layer.universal->fc2_weight, [&] { return layer.forward(x); })) << combine;
  }
}

TEST(SpheroMoe, FusedFloatLogitsAndTheirGradientsMatchTensorOps) {
  using moejet::testing::all_close;
  // sphero_logits' CPU float kernel against the same maths in tensor ops, with and without noise:
  // values, and gradients for the cosines and both temperatures.
  torch::manual_seed(4);
  auto cos0 = torch::rand({3, 7, 5}) * 2 - 1;
  auto noise = torch::randn({3, 7, 5}) * 0.1;
  auto wd = torch::randn({3, 5, 7}), wc = torch::randn({3, 7, 5});
  for (bool with_noise : {true, false}) {
    auto n = with_noise ? noise : torch::Tensor();
    auto cos = cos0.clone().requires_grad_(true);
    auto td = torch::full({}, 0.4).requires_grad_(true), tc = torch::full({}, 0.7).requires_grad_(true);
    auto [dl, cl] = sphero_logits(cos, td, tc, n);
    ((dl * wd).sum() + (cl * wc).sum()).backward();
    auto rcos = cos0.clone().requires_grad_(true);
    auto rtd = torch::full({}, 0.4).requires_grad_(true), rtc = torch::full({}, 0.7).requires_grad_(true);
    auto rdl = rcos / rtd, rcl = rcos / rtc;
    if (with_noise) {
      rdl = rdl + noise;
      rcl = rcl + noise;
    }
    rdl = rdl.transpose(1, 2);
    ((rdl * wd).sum() + (rcl * wc).sum()).backward();
    EXPECT_TRUE(all_close(dl, rdl, 1e-5, 1e-6)) << "noise " << with_noise;
    EXPECT_TRUE(all_close(cl, rcl, 1e-5, 1e-6));
    EXPECT_TRUE(all_close(cos.grad(), rcos.grad(), 1e-5, 1e-5));
    EXPECT_TRUE(all_close(td.grad(), rtd.grad(), 1e-4, 1e-5));
    EXPECT_TRUE(all_close(tc.grad(), rtc.grad(), 1e-4, 1e-5));
  }
  auto t = torch::full({}, 0.5);
  EXPECT_THROW(sphero_logits(cos0, t, t, torch::randn({3, 7, 4})), c10::Error);
  EXPECT_THROW(sphero_logits(cos0[0], t, t, torch::Tensor()), c10::Error);
}

TEST(SpheroMoe, LogitNoiseDrawnInTheFusedPassIsSharedSeededAndGradientFree) {
  using moejet::testing::all_close;
  // sphero_logits(..., noise_std): one N(0, std^2) sample added to both logits, reproducible
  // under manual_seed, and the gradients are those of the noiseless logits. Float runs the fused
  // kernel's own sampler, double the torch::randn_like fallback.
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    torch::manual_seed(5);
    auto cos0 = (torch::rand({4, 50, 61}) * 2 - 1).to(dtype);
    auto wd = torch::randn({4, 61, 50}, dtype), wc = torch::randn({4, 50, 61}, dtype);
    auto run = [&](double std_dev, torch::Tensor* grad) {
      auto cos = cos0.clone().requires_grad_(true);
      auto td = torch::full({}, 0.4, dtype).requires_grad_(true);
      auto tc = torch::full({}, 0.7, dtype).requires_grad_(true);
      auto [dl, cl] = sphero_logits(cos, td, tc, std_dev);
      ((dl * wd).sum() + (cl * wc).sum()).backward();
      *grad = torch::cat({cos.grad().flatten(), td.grad().view({1}), tc.grad().view({1})});
      return std::make_pair((dl.transpose(1, 2) - cos0 / 0.4).detach(), (cl - cos0 / 0.7).detach());
    };
    torch::Tensor g_noisy, g_again, g_clean;
    torch::manual_seed(11);
    auto [nd, nc] = run(0.1, &g_noisy);
    EXPECT_TRUE(all_close(nd, nc, 1e-5, 1e-5)) << "dispatch and combine share one sample";
    const double sd = nc.std().item<double>(), mean = nc.mean().item<double>();
    EXPECT_NEAR(sd, 0.1, 0.004) << dtype;  // 12200 samples: standard error of sd ~0.0006
    EXPECT_NEAR(mean, 0.0, 0.004) << dtype;
    torch::manual_seed(11);
    auto [nd2, nc2] = run(0.1, &g_again);
    EXPECT_TRUE(torch::equal(nc, nc2)) << "manual_seed reproduces the noise";
    auto [nd3, nc3] = run(0.1, &g_again);
    EXPECT_FALSE(torch::equal(nc, nc3)) << "the generator advances";
    auto [zd, zc] = run(0.0, &g_clean);
    EXPECT_LT(zc.abs().max().item<double>(), 1e-5);
    EXPECT_TRUE(all_close(g_noisy, g_clean, 1e-5, 1e-6));
  }
  auto t = torch::full({}, 0.5);
  EXPECT_THROW(sphero_logits(torch::rand({2, 3, 4}), t, t, -0.1), c10::Error);
}

TEST(SpheroMoe, KeysAndQueriesLieOnTheUnitSphere) {
  auto o = small_sphero();
  o.offset_scale = true;
  SpheroMoe layer(o, kSoftDim);
  auto x = torch::randn({3, 7, 6}) * 5;
  auto kn = layer.keys(x).norm(2, -1);
  auto qn = layer.queries().norm(2, -1);
  EXPECT_TRUE(moejet::testing::all_close(kn, torch::ones_like(kn), 1e-5, 1e-6));
  EXPECT_TRUE(moejet::testing::all_close(qn, torch::ones_like(qn), 1e-5, 1e-6));
  EXPECT_EQ(qn.numel(), (2 + 3) * 2);
}

TEST(SlotMoe, BatchPermutationEquivarianceAndTokenOrder) {
  torch::manual_seed(3);
  SoftMoe soft(small_soft(), kSoftDim);
  SpheroMoe sphero(small_sphero(), kSoftDim);
  for (MoeLayer* layer : std::vector<MoeLayer*>{&soft, &sphero}) {
    layer->eval();
    torch::NoGradGuard ng;
    auto x = torch::randn({4, 5, 6});
    auto y = layer->forward(x);
    // Permuting the batch permutes the outputs: images never see each other.
    auto bperm = torch::tensor({2, 0, 3, 1});
    EXPECT_TRUE(moejet::testing::all_close(layer->forward(x.index_select(0, bperm)), y.index_select(0, bperm)))
        << layer->kind();
    // Permuting the tokens of an image permutes its outputs (slots are order-free averages), so
    // the pooled per-image output is invariant to token order.
    auto tperm = torch::tensor({4, 2, 0, 1, 3});
    auto yt = layer->forward(x.index_select(1, tperm));
    EXPECT_TRUE(moejet::testing::all_close(yt, y.index_select(1, tperm))) << layer->kind();
    EXPECT_TRUE(moejet::testing::all_close(yt.mean(1), y.mean(1))) << layer->kind();
  }
}

TEST(SpheroMoe, NoiseOnlyInTrainingUnlessAsked) {
  auto o = small_sphero();
  o.noise_mult = 0.5;
  SpheroMoe layer(o, kSoftDim);
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 5, 6});
  layer.eval();
  EXPECT_TRUE(layer.forward(x).equal(layer.forward(x)));
  layer.train();
  EXPECT_FALSE(layer.forward(x).equal(layer.forward(x)));
}

TEST(SoftMoe, TheAuthorsSlotLayerNormVariantNoiseAndLogitsDrop) {
  torch::manual_seed(3);
  auto o = small_soft();
  o.soft_slot_layernorm = true;
  SoftMoe layer(o, kSoftDim);
  layer.eval();
  torch::NoGradGuard ng;
  {
    torch::NoGradGuard ng2;
    layer.slot_norm->weight.uniform_(0.5, 1.5);
    layer.scale.fill_(1.7);
  }
  // Tokens as they are, phi through LayerNorm then times scale; softmax over tokens (dispatch)
  // and over slots (combine).
  auto x = torch::randn({2, 5, 6});
  auto q =
      torch::layer_norm(layer.phi.reshape({-1, 6}), {6}, layer.slot_norm->weight, layer.slot_norm->bias, 1e-5) * 1.7;
  auto logits = torch::matmul(x, q.t());  // [B, N, M]
  auto dispatch = logits.softmax(1);
  auto combine = logits.softmax(2);
  auto slots = torch::matmul(dispatch.transpose(1, 2), x);  // [B, M, D], M = E*S = 3*2
  auto s = slots.view({2, 3, 2, 6}).permute({1, 0, 2, 3}).reshape({3, 4, 6});
  auto out = layer.experts->forward(s).view({3, 2, 2, 6}).permute({1, 0, 2, 3}).reshape({2, 6, 6});
  EXPECT_TRUE(moejet::testing::all_close(layer.forward(x), torch::matmul(combine, out), 1e-5, 1e-6));
  EXPECT_TRUE(layer.named_parameters().contains("slot_norm.weight"));

  // Noise and logits drop: in training; in eval only with noise_in_eval, as the authors' code.
  for (bool in_eval : {false, true}) {
    for (auto [noise, drop] : {std::pair{0.5, 0.0}, std::pair{0.0, 0.5}}) {
      auto o2 = small_soft();
      o2.noise_mult = noise;
      o2.logits_drop = drop;
      o2.noise_in_eval = in_eval;
      SoftMoe l2(o2, kSoftDim);
      l2.eval();
      EXPECT_EQ(l2.forward(x).equal(l2.forward(x)), !in_eval) << noise << " " << drop;
      l2.train();
      EXPECT_FALSE(l2.forward(x).equal(l2.forward(x))) << noise << " " << drop;
    }
  }
}

TEST(VitMoe, PaperConfigHasThePapersParameterCountAndTimmStyleKeys) {
  // V-JetMoE-T: ViT-T with SpheroMoE in blocks 7-12, 98 core (hidden 768) + 196 universal
  // (hidden 192) experts, one slot each: 265 M parameters in the paper.
  auto cfg = models::vit_preset("vit_tiny_patch16_224");
  cfg.global_pool = "avg";
  cfg.class_token = false;
  cfg.moe.layers = {6, 7, 8, 9, 10, 11};
  auto& sphero = cfg.moe.set<moe::SpheroMoeOptions>();
  sphero.core_experts = 98;
  sphero.universal_experts = 196;
  sphero.core_mlp_ratio = 4.0;
  sphero.universal_mlp_ratio = 1.0;
  models::VisionTransformer m(cfg);
  EXPECT_NEAR(models::count_parameters(*m) / 1e6, 265.4, 0.1);
  auto sd = io::module_state_dict(*m);
  EXPECT_EQ(sd["blocks.6.mlp.core.fc1.weight"].sizes(), (std::vector<int64_t>{98, 768, 192}));
  EXPECT_EQ(sd["blocks.11.mlp.universal.fc2.weight"].sizes(), (std::vector<int64_t>{196, 192, 192}));
  EXPECT_EQ(sd["blocks.6.mlp.phi"].sizes(), (std::vector<int64_t>{294, 1, 192}));
  EXPECT_TRUE(sd.contains("blocks.5.mlp.fc1.weight"));  // dense blocks keep timm's keys
  EXPECT_FALSE(sd.contains("blocks.6.mlp.fc1.weight"));
  ASSERT_EQ(m->moe_layer_list.size(), 6u);
  EXPECT_EQ(m->moe_layer_list.front().first, 6);
  double macs = 0;
  for (auto& kv : m->macs_by_layer()) {
    macs += kv.second;
  }
  EXPECT_NEAR(macs / 1e9, 1.36, 0.02);  // near-dense FLOPs (dense ViT-T: 1.25 G)
  json j = cfg;
  auto back = models::vit_config_from_json(j);
  EXPECT_EQ(json(back), j);
  EXPECT_EQ(back.moe.block_indices(12), (std::vector<int64_t>{6, 7, 8, 9, 10, 11}));
}

TEST(VitMoe, ForwardBackwardWithEachLayerTypeAndConfigErrors) {
  const json layers = {{"soft", {{"num_experts", 4}}},
                       {"sphero", {{"core_experts", 2}, {"universal_experts", 4}}},
                       {"topk", {{"num_experts", 4}}}};
  for (const auto& [type, options] : layers.items()) {
    auto c = moejet::testing::tiny_vit();
    c.img_size = 28;
    c.patch_size = 7;
    c.num_classes = 10;
    c.depth = 3;
    json moe = options;
    moe["type"] = type;
    moe["last"] = 2;
    c.moe = moejet::testing::moe_config(moe);
    models::VisionTransformer m(c);
    auto out = m->forward(torch::randn({3, 1, 28, 28}));
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 10}));
    out.sum().backward();
    for (auto& p : m->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << type << " " << p.key();
    }
    EXPECT_EQ(m->moe_layer_list.size(), 2u);
    EXPECT_EQ(m->moe_layer_list[0].first, 1);
  }
  models::VitConfig bad;
  bad.depth = 4;
  bad.moe.layers = {7};
  bad.moe.set<moe::SpheroMoeOptions>().core_experts = 2;
  EXPECT_THROW(bad.validate(), ConfigError);
  json j = {{"moe", {{"type", "sphero"}, {"core_experts", 2}, {"last", 1}, {"core_expert", 3}}}};
  EXPECT_TRUE(moejet::testing::throws_error<ConfigError>([&] { models::vit_config_from_json(j); },
                                                         {"unknown key 'model.moe.core_expert'"}));
}
