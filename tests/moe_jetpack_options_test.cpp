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

// Layers of width kDim = 16.
constexpr int64_t kDim = 16;

SpheroMoeOptions sphero(int64_t slots = 1) {
  SpheroMoeOptions o;
  o.core_experts = 3;
  o.core_mlp_ratio = 2.0;  // 32 hidden units
  o.universal_experts = 4;
  o.universal_mlp_ratio = 0.5;  // 8
  o.slots_per_expert = slots;
  o.noise_mult = 0.0;
  return o;
}

}  // namespace

TEST(JetpackOptions, DropPathDropsAnImagesWholeOutputAtTheAuthorsDepthWiseRate) {
  torch::manual_seed(0);
  auto o = sphero();
  o.expert_init = "trunc_normal";
  SpheroMoe layer(o, kDim, /*drop_path=*/0.5);
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
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(0.1, "image", 6, 12, 0, 6), 0.1 * 6 / 11);
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(0.1, "image", 11, 12, 5, 6), 0.1);
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(0.1, "expert", 6, 12, 0, 6), 0.0);
  EXPECT_DOUBLE_EQ(moe_drop_path_rate(0.1, "expert", 9, 12, 3, 6), 0.1 * 3 / 5);
  // The factory gives the layer of block 6 (the first of 6 MoE blocks of 12) its rate.
  MoeConfig c;
  auto& s = c.set<SpheroMoeOptions>();
  s.expert_drop_path = 0.1;
  s.core_experts = 2;
  s.universal_experts = 2;
  auto built = std::dynamic_pointer_cast<SpheroMoe>(make_moe_layer(c, kDim, 6, 12, 0, 6));
  ASSERT_TRUE(built);
  EXPECT_DOUBLE_EQ(built->drop_path, 0.1 * 6 / 11);
  s.expert_drop_path_mode = "expert";
  EXPECT_DOUBLE_EQ(std::dynamic_pointer_cast<SpheroMoe>(make_moe_layer(c, kDim, 9, 12, 3, 6))->drop_path, 0.1 * 3 / 5);

  // Soft MoE gets the same per-image drop path, and only that one.
  c.set<SoftMoeOptions>().expert_drop_path = 0.1;
  auto soft = std::dynamic_pointer_cast<SoftMoe>(make_moe_layer(c, kDim, 11, 12, 5, 6));
  ASSERT_TRUE(soft);
  EXPECT_DOUBLE_EQ(soft->drop_path, 0.1);
  std::get<SoftMoeOptions>(c.options).expert_drop_path_mode = "expert";
  EXPECT_THROW(c.validate(12), ConfigError);
}

TEST(JetpackOptions, ExpertInitIsTheAuthorsKaimingUniformForTheirLayers) {
  torch::manual_seed(0);
  EXPECT_EQ(resolve_expert_init("auto", "kaiming_uniform"), "kaiming_uniform");
  EXPECT_EQ(resolve_expert_init("trunc_normal", "kaiming_uniform"), "trunc_normal");
  // "auto": the authors' kaiming_uniform in their layers (soft, sphero), timm's trunc_normal
  // (std .02) in V-MoE's and Mobile V-MoE's.
  const double soft_bound = 1.0 / std::sqrt(64.0 * 16.0);
  EXPECT_LE(SoftMoe(SoftMoeOptions{}, kDim).experts->fc1_weight.abs().max().item<double>(), soft_bound);
  EXPECT_NEAR(TopKMoe(TopKMoeOptions{}, kDim).experts->fc1_weight.std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(PerImageMoe(PerImageMoeOptions{}, kDim).experts->fc1_weight.std().item<double>(), 0.02, 0.002);
  TopKMoeOptions kaiming;
  kaiming.expert_init = "kaiming_uniform";
  EXPECT_LE(TopKMoe(kaiming, kDim).experts->fc1_weight.abs().max().item<double>(), soft_bound);

  auto o = sphero();
  o.core_experts = 8;
  o.core_mlp_ratio = 4.0;  // 64 hidden units
  SpheroMoe layer(o, kDim);
  // kaiming_uniform_(a=sqrt(5)) on [E, out, in]: fan-in out * in, U(-b, b) with b = 1/sqrt(out * in).
  const auto& w = layer.core->fc1_weight;  // [8, 64, 16]
  const double bound = 1.0 / std::sqrt(64.0 * 16.0);
  EXPECT_LE(w.abs().max().item<double>(), bound);
  EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound);
  EXPECT_EQ(layer.core->fc1_bias.abs().max().item<double>(), 0.0);
  o.expert_init = "trunc_normal";
  SpheroMoe timm_init(o, kDim);
  EXPECT_NEAR(timm_init.core->fc1_weight.std().item<double>(), 0.02, 0.002);
}

TEST(JetpackOptions, OrthogonalPhiOverExpertsAsTheAuthorsOrOverSlots) {
  torch::manual_seed(0);
  auto o = sphero(2);  // E = 7 experts, S = 2 slots, D = 16
  SpheroMoe experts(o, kDim);
  // torch's orthogonal_ on [E, S, D] (the authors'): rows of the [E, S*D] view are orthonormal.
  auto rows = experts.phi.detach().reshape({7, 32});
  EXPECT_TRUE(all_close(rows.matmul(rows.t()), torch::eye(7), 1e-5, 1e-5));
  o.phi_init = "orthogonal_slots";
  SpheroMoe slots(o, kDim);
  auto q = slots.phi.detach().reshape({14, 16});
  EXPECT_TRUE(all_close(q.matmul(q.t()), torch::eye(14), 1e-5, 1e-5));
  o.phi_init = "random";
  EXPECT_THROW(SpheroMoe bad(o, kDim), ConfigError);
}

TEST(JetpackOptions, TemperatureClampIsOptionalAndOffInTheAuthorsCode) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 5, 16});
  auto run = [&](double temperature_min, double t) {
    auto o = sphero();
    o.temperature_min = temperature_min;
    torch::manual_seed(1);
    SpheroMoe layer(o, kDim);
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
  using moejet::testing::moe_config;
  using moejet::testing::throws_error;
  json j = {{"type", "sphero"}, {"layers", {0}}, {"core_experts", 2}, {"universal_experts", 2}};
  auto c = moe_config(j);
  ASSERT_EQ(c.get<SpheroMoeOptions>().l2_norm, "add");  // the authors' l2norm by default
  // x / (|x| + 1e-6) against x / max(|x|, 1e-6): a key of norm 1e-6 becomes 0.5 long, or 1.
  auto tiny = torch::full({1, 1, kDim}, 1e-6 / std::sqrt(static_cast<double>(kDim)));
  auto key_norm = [&](const MoeConfig& config) {
    auto layer = std::dynamic_pointer_cast<SpheroMoe>(make_moe_layer(config, kDim, 0, 1, 0, 1));
    return layer->keys(tiny).norm().item<double>();
  };
  EXPECT_NEAR(key_norm(c), 0.5, 1e-4);
  j["l2_norm"] = "clamp";
  EXPECT_NEAR(key_norm(moe_config(j)), 1.0, 1e-4);
  // Soft MoE's options are an error on another layer type (the authors' dual path drops nothing)...
  j["logits_drop"] = 0.1;
  EXPECT_TRUE(throws_error<ConfigError>([&] { moe_config(j); },
                                        {"model.moe.logits_drop", "an option of MoE type soft, not of type sphero"}));
  // ...and reach a soft layer.
  json soft_json = {{"type", "soft"},    {"layers", {0}},         {"l2_norm", "clamp"},
                    {"noise_mult", 1.0}, {"noise_in_eval", true}, {"soft_slot_layernorm", true},
                    {"logits_drop", 0.1}};
  auto soft = std::dynamic_pointer_cast<SoftMoe>(make_moe_layer(moe_config(soft_json), kDim, 0, 1, 0, 1));
  EXPECT_EQ(soft->options.l2_norm, "clamp");
  EXPECT_EQ(soft->options.noise_mult, 1.0);
  EXPECT_TRUE(soft->options.noise_in_eval);
  EXPECT_EQ(soft->options.logits_drop, 0.1);
  EXPECT_TRUE(soft->slot_norm);
  // Soft MoE has no noise unless asked (noise_mult < 0 means 1 / E for SpheroMoE only): two
  // training forwards agree.
  auto quiet = std::dynamic_pointer_cast<SoftMoe>(
      make_moe_layer(moe_config({{"type", "soft"}, {"layers", {0}}}), kDim, 0, 1, 0, 1));
  EXPECT_EQ(quiet->options.noise_mult, -1.0);
  quiet->train();
  auto x = torch::randn({2, 5, kDim});
  EXPECT_TRUE(quiet->forward(x).equal(quiet->forward(x)));
  soft_json["l2_norm"] = "sometimes";
  EXPECT_TRUE(throws_error<ConfigError>([&] { moe_config(soft_json); }, {"model.moe.l2_norm", "add or clamp"}));
  // Every field round-trips through JSON.
  soft_json["l2_norm"] = "clamp";
  json written = moe_config(soft_json);
  EXPECT_EQ(json(moe_config(written)), written);
  for (const auto& [key, value] : soft_json.items()) {
    EXPECT_EQ(written.at(key), value) << key;
  }
}

TEST(MoeConfig, EachLayerTypeReadsItsOwnOptionsAndOlderFilesWithEveryTypesKeysStillLoad) {
  using moejet::testing::moe_config;
  using moejet::testing::throws_error;
  // What moejet wrote before the options were per type: every type's keys at their defaults.
  json old = {{"type", "soft"},
              {"layers", {1}},
              {"last", 0},
              {"num_experts", 4},
              {"mlp_ratio", 2.0},
              {"slots_per_expert", 1},
              {"normalize", true},
              {"soft_slot_layernorm", false},
              {"logits_drop", 0.0},
              {"l2_norm", "add"},
              {"core_experts", 0},
              {"universal_experts", 0},
              {"core_mlp_ratio", 4.0},
              {"universal_mlp_ratio", 1.0},
              {"slot_layernorm", true},
              {"offset_scale", false},
              {"combine", "entmax15"},
              {"temperature_init", 0.5},
              {"temperature_min", 0.01},
              {"noise_mult", -1.0},
              {"noise_in_eval", false},
              {"phi_init", "orthogonal_experts"},
              {"expert_init", "auto"},
              {"expert_drop", 0.0},
              {"expert_drop_path", 0.0},
              {"expert_drop_path_mode", "image"},
              {"top_k", 2},
              {"capacity_factor", 1.0},
              {"router_noise", 0.0},
              {"aux_loss_weight", 0.01},
              {"batch_priority", false}};
  auto c = moe_config(old);
  EXPECT_EQ(c.type(), "soft");
  EXPECT_EQ(c.get<SoftMoeOptions>().num_experts, 4);
  EXPECT_EQ(c.get<SoftMoeOptions>().mlp_ratio, 2.0);
  // Written back, only the soft layer's own keys remain.
  json back = c;
  EXPECT_FALSE(back.contains("core_experts"));
  EXPECT_FALSE(back.contains("top_k"));
  EXPECT_EQ(back.size(), config_keys<SoftMoeOptions>().size() + 3);
  // Another type's key with a value of the user's is an error naming the type it belongs to.
  old["core_experts"] = 98;
  EXPECT_TRUE(throws_error<ConfigError>([&] { moe_config(old); },
                                        {"model.moe.core_experts", "an option of MoE type sphero, not of type soft"}));
  EXPECT_TRUE(throws_error<ConfigError>(
      [&] {
        moe_config({{"type", "softer"}});
      },
      {"model.moe.type", "none, soft, sphero, topk or image"}));
  EXPECT_THROW(c.get<SpheroMoeOptions>(), ConfigError);
  // A dense model's section: no options at all.
  EXPECT_FALSE(moe_config({{"type", "none"}}).enabled());
  EXPECT_EQ(MoeConfig().type(), "none");
}
