// The MoE Jetpack authors' behaviours that moejet takes as defaults, each with moejet's own
// alternative: per-image drop path at the authors' depth-wise rate, their expert init, their
// orthogonal phi for several slots per expert, and the temperature clamp (off in theirs).

#include <torch/torch.h>

#include "moejet/moe/moe_config.h"
#include "moejet/moe/moe_factory.h"
#include "moejet/moe/soft_moe.h"
#include "moejet/moe/sphero_moe.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::moe;
using moejet::testing::all_close;

namespace {

SpheroMoeOptions sphero(int64_t slots = 1) {
  SpheroMoeOptions o;
  o.dim = 16;
  o.core_experts = 3;
  o.core_hidden = 32;
  o.universal_experts = 4;
  o.universal_hidden = 8;
  o.slots_per_expert = slots;
  o.noise_mult = 0.0;
  return o;
}

}  // namespace

TEST(JetpackOptions, DropPathDropsAnImagesWholeOutputAtTheAuthorsDepthWiseRate) {
  torch::manual_seed(0);
  auto o = sphero();
  o.expert_init = "trunc_normal";
  o.expert_drop_path = 0.5;
  SpheroMoe layer(o);
  auto x = torch::randn({64, 5, 16});
  layer.eval();
  auto y_eval = layer.forward(x).detach();
  layer.train();
  auto y = layer.forward(x).detach();
  int dropped = 0, kept = 0;
  for (int64_t b = 0; b < 64; ++b) {
    if (y[b].abs().max().item<double>() == 0.0) {
      ++dropped;
    } else {
      EXPECT_TRUE(all_close(y[b], y_eval[b] * 2.0)) << "image " << b;  // kept images scaled by 1/(1-p)
      ++kept;
    }
  }
  EXPECT_GT(dropped, 16);
  EXPECT_GT(kept, 16);

  // torch.linspace(0, r, depth)[block] in the authors' model; moejet's "expert" mode rises from 0
  // over the MoE blocks.
  MoeConfig c;
  c.type = "sphero";
  c.expert_drop_path = 0.1;
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(c, 6, 12, 0, 6), 0.1 * 6 / 11);
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(c, 11, 12, 5, 6), 0.1);
  c.expert_drop_path_mode = "expert";
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(c, 6, 12, 0, 6), 0.0);
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(c, 9, 12, 3, 6), 0.1 * 3 / 5);
  // The factory hands the rate and the mode to the layer.
  c.expert_drop_path_mode = "image";
  c.core_experts = 2;
  c.universal_experts = 2;
  auto built = std::dynamic_pointer_cast<SpheroMoe>(make_moe_layer(c, 16, 6, 12, 0, 6));
  ASSERT_TRUE(built);
  EXPECT_DOUBLE_EQ(built->options.expert_drop_path, 0.1 * 6 / 11);
  EXPECT_TRUE(built->options.drop_path_per_image);

  // Soft MoE gets the same per-image drop path.
  c.type = "soft";
  auto soft = std::dynamic_pointer_cast<SoftMoe>(make_moe_layer(c, 16, 11, 12, 5, 6));
  ASSERT_TRUE(soft);
  EXPECT_DOUBLE_EQ(soft->options.drop_path, 0.1);
}

TEST(JetpackOptions, ExpertInitIsTheAuthorsKaimingUniformForTheirLayers) {
  torch::manual_seed(0);
  MoeConfig c;
  c.type = "sphero";
  EXPECT_EQ(resolved_expert_init(c), "kaiming_uniform");
  c.type = "soft";
  EXPECT_EQ(resolved_expert_init(c), "kaiming_uniform");
  c.type = "topk";
  EXPECT_EQ(resolved_expert_init(c), "trunc_normal");
  c.type = "image";
  EXPECT_EQ(resolved_expert_init(c), "trunc_normal");
  c.expert_init = "kaiming_uniform";
  EXPECT_EQ(resolved_expert_init(c), "kaiming_uniform");

  auto o = sphero();
  o.core_experts = 8;
  o.core_hidden = 64;
  SpheroMoe layer(o);
  // kaiming_uniform_(a=sqrt(5)) on [E, out, in]: fan-in out * in, U(-b, b) with b = 1/sqrt(out * in).
  const auto& w = layer.core->fc1_weight;  // [8, 64, 16]
  const double bound = 1.0 / std::sqrt(64.0 * 16.0);
  EXPECT_LE(w.abs().max().item<double>(), bound);
  EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound);
  EXPECT_EQ(layer.core->fc1_bias.abs().max().item<double>(), 0.0);
  o.expert_init = "trunc_normal";
  SpheroMoe timm_init(o);
  EXPECT_NEAR(timm_init.core->fc1_weight.std().item<double>(), 0.02, 0.002);
}

TEST(JetpackOptions, OrthogonalPhiOverExpertsAsTheAuthorsOrOverSlots) {
  torch::manual_seed(0);
  auto o = sphero(2);  // E = 7 experts, S = 2 slots, D = 16
  SpheroMoe experts(o);
  // torch's orthogonal_ on [E, S, D] (the authors'): rows of the [E, S*D] view are orthonormal.
  auto rows = experts.phi.detach().reshape({7, 32});
  EXPECT_TRUE(all_close(rows.matmul(rows.t()), torch::eye(7), 1e-5, 1e-5));
  o.phi_init = "orthogonal_slots";
  SpheroMoe slots(o);
  auto q = slots.phi.detach().reshape({14, 16});
  EXPECT_TRUE(all_close(q.matmul(q.t()), torch::eye(14), 1e-5, 1e-5));
  o.phi_init = "random";
  EXPECT_THROW(SpheroMoe bad(o), c10::Error);
}

TEST(JetpackOptions, TemperatureClampIsOptionalAndOffInTheAuthorsCode) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 5, 16});
  auto run = [&](double temperature_min, double t) {
    auto o = sphero();
    o.temperature_min = temperature_min;
    torch::manual_seed(1);
    SpheroMoe layer(o);
    layer.eval();
    torch::NoGradGuard ng;
    layer.dispatch_temperature.fill_(t);
    layer.combine_temperature.fill_(t);
    return layer.forward(x);
  };
  // Clamped at 0.3, temperatures of 0.1 and 0.2 act alike (as 0.3); unclamped they do not.
  EXPECT_TRUE(run(0.3, 0.1).equal(run(0.3, 0.2)));
  EXPECT_FALSE(run(0.3, 0.1).equal(run(0.3, 0.4)));
  EXPECT_FALSE(all_close(run(0.0, 0.1), run(0.0, 0.2)));
}

TEST(JetpackOptions, TheConfigReachesTheLayersL2FormSoftNoiseLogitsDropAndSlotLayerNorm) {
  MoeConfig c;
  c.type = "sphero";
  c.layers = {0};
  c.core_experts = 2;
  c.universal_experts = 2;
  ASSERT_EQ(c.l2_norm, "add");  // the authors' l2norm by default
  auto sphero_layer = std::dynamic_pointer_cast<SpheroMoe>(make_moe_layer(c, 16, 0, 1, 0, 1));
  EXPECT_TRUE(sphero_layer->options.l2_additive);
  c.l2_norm = "clamp";
  EXPECT_FALSE(std::dynamic_pointer_cast<SpheroMoe>(make_moe_layer(c, 16, 0, 1, 0, 1))->options.l2_additive);
  c.logits_drop = 0.1;
  EXPECT_THROW(c.validate(1), ConfigError);  // soft only: the authors' dual path drops nothing
  c.type = "soft";
  c.noise_mult = 1.0;
  c.noise_in_eval = true;
  c.soft_slot_layernorm = true;
  c.validate(1);
  auto soft = std::dynamic_pointer_cast<SoftMoe>(make_moe_layer(c, 16, 0, 1, 0, 1));
  EXPECT_FALSE(soft->options.l2_additive);
  EXPECT_EQ(soft->options.noise_mult, 1.0);
  EXPECT_TRUE(soft->options.noise_in_eval);
  EXPECT_EQ(soft->options.logits_drop, 0.1);
  EXPECT_TRUE(soft->slot_norm);
  // Soft MoE has no noise unless asked (noise_mult < 0 means 1 / E for SpheroMoE only).
  c.noise_mult = -1.0;
  EXPECT_EQ(std::dynamic_pointer_cast<SoftMoe>(make_moe_layer(c, 16, 0, 1, 0, 1))->options.noise_mult, 0.0);
  c.l2_norm = "sometimes";
  EXPECT_THROW(c.validate(1), ConfigError);
  // Every new field round-trips through JSON.
  c.l2_norm = "clamp";
  json j = c;
  auto back = moe_config_from_json(j, "moe");
  EXPECT_EQ(json(back), j);
}
