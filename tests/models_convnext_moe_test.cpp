// ConvNeXt MoE: MoE layers in the MLP slot of chosen blocks with spatial positions as tokens,
// keys, the block's arithmetic, every MoE type training, layer ids, and recycling from a dense
// ConvNeXt through the same code path as for ViT.

#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/convnext.h"
#include "moejet/models/model_config.h"
#include "moejet/recycle/recycle.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::models;

namespace {

ConvNextConfig tiny_convnext() {
  ConvNextConfig c;
  c.in_chans = 1;
  c.num_classes = 4;
  c.img_size = 64;
  c.depths = {1, 1, 3, 1};
  c.dims = {8, 16, 24, 32};
  c.ls_init_value = 0.5;  // visible residual branches, so a wrong MLP would show in the output
  return c;
}

ConvNextConfig tiny_convnext_moe(const std::string& type) {
  auto c = tiny_convnext();
  json moe = {{"type", type}, {"layers", {3, 4}}};  // stage 2, blocks 1 and 2 (flat order: 0 | 1 | 2 3 4 | 5)
  if (type == "sphero") {
    moe.update({{"core_experts", 2}, {"universal_experts", 4}, {"core_mlp_ratio", 4.0}, {"universal_mlp_ratio", 1.0}});
  } else {
    moe.update({{"num_experts", 4}, {"mlp_ratio", 2.0}});
  }
  if (type == "topk" || type == "image") {
    moe["top_k"] = type == "image" ? 1 : 2;
  }
  c.moe = moejet::testing::moe_config(moe);
  return c;
}

}  // namespace

TEST(ConvNextMoe, MoeLayersSitInTheChosenBlocksUnderTimmKeys) {
  ConvNext m(tiny_convnext_moe("sphero"));
  ASSERT_EQ(m->moe_layer_list.size(), 2u);
  EXPECT_EQ(m->moe_layer_list[0].first, 3);
  EXPECT_EQ(m->mlp_key(3), "stages.2.blocks.1.mlp");
  EXPECT_EQ(m->mlp_key(5), "stages.3.blocks.0.mlp");
  EXPECT_EQ(m->block_dim(3), 24);
  EXPECT_EQ(m->block_mlp(3), std::static_pointer_cast<nn::FeedForward>(m->moe_layer_list[0].second));
  std::set<std::string> keys;
  for (const auto& kv : m->named_parameters())
    keys.insert(kv.key());
  EXPECT_TRUE(keys.count("stages.2.blocks.1.mlp.core.fc1.weight")) << "expert keys under the block's mlp";
  EXPECT_TRUE(keys.count("stages.2.blocks.2.mlp.universal.fc2.weight"));
  EXPECT_TRUE(keys.count("stages.2.blocks.0.mlp.fc1.weight")) << "other blocks keep dense MLPs";
  EXPECT_FALSE(keys.count("stages.2.blocks.1.mlp.fc1.weight"));
  // Expert widths follow the stage: core hidden 4 * 24.
  auto groups = m->moe_layer_list[0].second->expert_groups();
  EXPECT_EQ(groups.at(0).second->dim, 24);
  EXPECT_EQ(groups.at(0).second->hidden, 96);
  EXPECT_THROW(ConvNext(([] {
                 auto c = tiny_convnext_moe("soft");
                 c.moe.layers = {6};  // only 6 blocks
                 return c;
               })()),
               ConfigError);
}

TEST(ConvNextMoe, BlockFeedsSpatialPositionsAsTokensToTheMoeLayer) {
  torch::manual_seed(0);
  ConvNext m(tiny_convnext_moe("soft"));
  m->eval();
  auto block = m->blocks[2][1];
  auto x = torch::randn({2, 24, 4, 4});
  torch::NoGradGuard ng;
  // x + gamma * moe(norm(dwconv(x))) with the 16 positions of each image as its tokens.
  auto tokens = block->norm(block->conv_dw(x).permute({0, 2, 3, 1})).reshape({2, 16, 24});
  auto y = m->moe_layer_list[0].second->forward(tokens).reshape({2, 4, 4, 24}) * block->gamma;
  auto expected = x + y.permute({0, 3, 1, 2});
  EXPECT_TRUE(moejet::testing::all_close(block->forward(x), expected, 1e-5, 1e-6));
  // Soft MoE mixes positions of one image only: images are independent of each other.
  auto both = block->forward(x);
  auto alone = block->forward(x.narrow(0, 1, 1));
  EXPECT_TRUE(moejet::testing::all_close(both.narrow(0, 1, 1), alone, 1e-5, 1e-6));
}

TEST(ConvNextMoe, EveryMoeTypeTrainsAndReachesAllParameters) {
  for (const char* type : {"soft", "sphero", "topk", "image"}) {
    torch::manual_seed(1);
    ConvNext m(tiny_convnext_moe(type));
    m->train();
    auto x = torch::randn({4, 1, 64, 64});
    auto logits = m->forward(x);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{4, 4})) << type;
    auto loss = logits.logsumexp(1).mean();
    if (auto aux = m->moe_aux_loss(); aux.defined()) {
      loss = loss + aux;
    }
    if (m->router) {
      ASSERT_TRUE(m->last_routing.logits.defined());
      loss = loss + m->last_routing.logits.logsumexp(1).mean();
    }
    loss.backward();
    for (const auto& kv : m->named_parameters()) {
      if (kv.key().find(".mlp.") == std::string::npos && kv.key().rfind("router", 0) != 0)
        continue;
      ASSERT_TRUE(kv.value().grad().defined()) << type << ": " << kv.key() << " gets no gradient";
      EXPECT_TRUE(torch::isfinite(kv.value().grad()).all().item<bool>()) << type << ": " << kv.key();
    }
  }
}

TEST(ConvNextMoe, ModelAuxLossSumsTheMoeLayersAuxLosses) {
  torch::manual_seed(2);
  ConvNext dense(tiny_convnext());
  dense->forward(torch::randn({2, 1, 64, 64}));
  EXPECT_FALSE(dense->moe_aux_loss().defined()) << "a dense model has no auxiliary loss";
  ConvNext m(tiny_convnext_moe("topk"));
  m->train();
  m->forward(torch::randn({4, 1, 64, 64}));
  double sum = 0;
  for (const auto& e : m->moe_layer_list) {
    sum += e.second->last_aux_loss.item<double>();
  }
  ASSERT_TRUE(m->moe_aux_loss().defined());
  EXPECT_GT(sum, 0.0);  // top-k's load-balancing losses
  EXPECT_NEAR(m->moe_aux_loss().item<double>(), sum, 1e-6);
}

TEST(ConvNextMoe, LayerIdsFollowDepthOrderForLayerDecay) {
  ConvNext m(tiny_convnext());
  EXPECT_EQ(m->num_layers(), 8);
  EXPECT_EQ(m->layer_id("stem.0.weight"), 0);
  EXPECT_EQ(m->layer_id("stages.0.blocks.0.conv_dw.weight"), 1);
  EXPECT_EQ(m->layer_id("stages.2.downsample.1.weight"), 3);
  EXPECT_EQ(m->layer_id("stages.2.blocks.2.mlp.fc1.weight"), 5);
  EXPECT_EQ(m->layer_id("stages.3.blocks.0.gamma"), 6);
  EXPECT_EQ(m->layer_id("head.fc.weight"), 7);
}

TEST(ConvNextMoe, ModelConfigDispatchesOnArchAndRoundTrips) {
  auto c = model_config_from_json(json{{"preset", "convnext_atto"}, {"num_classes", 5}});
  EXPECT_EQ(c.arch(), "convnext");
  EXPECT_EQ(c.num_classes(), 5);
  ModelConfig moe = tiny_convnext_moe("sphero");
  auto back = model_config_from_json(json(moe));
  EXPECT_EQ(json(back), json(moe));
  EXPECT_EQ(back.moe().layers, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(make_model(back)->arch(), "convnext");
  // ViT JSON keeps its old form (no "arch") and "arch": "vit" is accepted.
  auto vit = model_config_from_json(json{{"preset", "vit_tiny_patch16_224"}, {"arch", "vit"}});
  EXPECT_EQ(vit.arch(), "vit");
  EXPECT_FALSE(json(vit).contains("arch"));
  EXPECT_THROW(model_config_from_json(json{{"arch", "resnet"}}), ConfigError);
  EXPECT_THROW(model_config_from_json(json{{"arch", "convnext"}, {"moe", {{"type", "soft"}, {"layers", {99}}}}}),
               ConfigError);
}

TEST(ConvNextMoe, RecyclingPartitionsEachDenseMlpAndCopiesTheRest) {
  torch::manual_seed(2);
  ConvNext dense(tiny_convnext());
  auto cfg = tiny_convnext_moe("soft");                            // 4 experts x hidden 48 of the 96 units of stage 2
  std::get<moe::SoftMoeOptions>(cfg.moe.options).mlp_ratio = 1.0;  // 4 experts x 24 units: a partition of 96
  ConvNext moe(cfg);
  recycle::RecycleOptions o;
  o.method = recycle::Method::Uniform;
  o.uniform = "shifted";  // moejet's disjoint grids (the authors' linspace gives every expert the same units)
  o.rescale = false;
  auto report = recycle::recycle_model(*dense, *moe, {}, o);
  ASSERT_EQ(report["blocks"].size(), 2u);
  EXPECT_EQ(report["blocks"][0]["key"], "stages.2.blocks.1.mlp");
  // Shared weights are copied exactly.
  auto ds = io::module_state_dict(*dense);
  for (const auto& kv : moe->named_parameters()) {
    if (kv.key().find("blocks.1.mlp.") != std::string::npos && kv.key().rfind("stages.2", 0) == 0)
      continue;
    if (kv.key().find("blocks.2.mlp.") != std::string::npos && kv.key().rfind("stages.2", 0) == 0)
      continue;
    ASSERT_TRUE(ds.contains(kv.key())) << kv.key();
    EXPECT_TRUE(torch::equal(kv.value(), ds[kv.key()])) << kv.key();
  }
  // The partial sums of the disjoint experts add up to the dense MLP of each MoE block.
  for (size_t i = 0; i < 2; ++i) {
    const int64_t b = moe->moe_layer_list[i].first;
    auto experts = moe->moe_layer_list[i].second->expert_groups().at(0).second;
    auto mlp = std::dynamic_pointer_cast<nn::Mlp>(dense->block_mlp(b));
    auto x = torch::randn({7, 24});
    torch::NoGradGuard ng;
    experts->eval();
    auto y = experts->forward(x.unsqueeze(0).expand({4, 7, 24}).contiguous()).sum(0) - 3 * mlp->fc2->bias;
    EXPECT_TRUE(moejet::testing::all_close(y, mlp->forward(x), 1e-5, 1e-5)) << "block " << b;
  }
  // A ViT cannot be recycled into a ConvNeXt.
  ModelConfig vit;
  auto v = make_model(vit);
  EXPECT_THROW(recycle::recycle_model(*v, *moe, {}, o), ConfigError);
}
