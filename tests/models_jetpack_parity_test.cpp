// Parity with the MoE Jetpack authors' code (Adlith/MoE-Jetpack at 45214a6): fixtures written by
// their own DualPathSoftMoELayerWrapper and VisionTransformerMoe (tests/data/fixtures/jetpack,
// see its README) must give the same outputs and gradients from moejet's SpheroMoE and ViT, after
// their keys are mapped by models::to_moejet_layout; the mmengine training checkpoint they write
// must load too.

#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/io/checkpoint_file.h"
#include "moejet/models/checkpoint_layout.h"
#include "moejet/models/model_file.h"
#include "moejet/models/vit.h"
#include "moejet/moe/sphero_moe.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::models;
using moejet::testing::all_close;
using moejet::testing::fixture_path;

namespace {

std::set<std::string> key_set(const io::StateDict& s) {
  auto k = s.keys();
  return {k.begin(), k.end()};
}

// VisionTransformerMoe(img_size=28, patch_size=7, in_chans=1, num_classes=10, global_pool='avg',
// embed_dim=64, depth=4, num_heads=2, class_token=True, moe_layers=[2, 3], num_experts=12,
// if_dualpath=True, core_experts=4, univ_experts=8, univ_factor=0.25, slot_layernorm=True).
VitConfig vit_moe_avg_config() {
  VitConfig c;
  c.img_size = 28;
  c.patch_size = 7;
  c.in_chans = 1;
  c.num_classes = 10;
  c.embed_dim = 64;
  c.depth = 4;
  c.num_heads = 2;
  c.class_token = true;
  c.global_pool = "avg";
  c.moe.layers = {2, 3};
  auto& sphero = c.moe.set<moe::SpheroMoeOptions>();
  sphero.core_experts = 4;
  sphero.universal_experts = 8;
  sphero.core_mlp_ratio = 4.0;
  sphero.universal_mlp_ratio = 1.0;  // 4 * univ_factor
  return c;
}

}  // namespace

TEST(JetpackParity, DualPathLayerOutputAndEveryGradientMatchTheAuthors) {
  const std::string dir = fixture_path("jetpack/layer_d64_c8_u16_s1/");
  std::vector<std::string> notes;
  auto params = to_moejet_layout(io::read_safetensors(dir + "params.safetensors"), &notes);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("MoE Jetpack authors' key layout: 10 keys renamed"), std::string::npos) << notes[0];
  auto io_ = io::read_safetensors(dir + "io.safetensors");

  moe::SpheroMoeOptions o;
  o.core_experts = 8;
  o.core_mlp_ratio = 4.0;  // 256 hidden units
  o.universal_experts = 16;
  o.universal_mlp_ratio = 1.0;  // 64
  o.slots_per_expert = 1;
  o.slot_layernorm = true;
  moe::SpheroMoe layer(o, /*dim=*/64);
  EXPECT_EQ(key_set(io::module_state_dict(layer)), key_set(params));
  auto report = io::load_state_dict(layer, params, {}, dir + "params.safetensors");
  ASSERT_TRUE(report.ok()) << report.summary();
  layer.eval();

  auto x = io_["x"].clone().requires_grad_(true);
  auto y = layer.forward(x);
  EXPECT_TRUE(all_close(y, io_["y"]));
  (y * io_["w"]).sum().backward();
  EXPECT_TRUE(all_close(x.grad(), io_["grad.x"])) << "grad.x";

  // Every parameter's gradient, looked up under the authors' name.
  auto ours = io::StateDict();
  for (const auto& p : layer.named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    ours.insert(p.key(), p.value().grad());
  }
  int checked = 0;
  for (const auto& g : to_jetpack_layout(ours)) {
    ASSERT_TRUE(io_.contains("grad." + g.key())) << g.key();
    EXPECT_TRUE(all_close(g.value(), io_["grad." + g.key()])) << "grad." << g.key();
    ++checked;
  }
  EXPECT_EQ(checked, 13);
  EXPECT_EQ(static_cast<int>(io_.size()), 4 + 13);  // x, y, w, grad.x and 13 parameter gradients
}

TEST(JetpackParity, VisionTransformerMoeLogitsMatchTheAuthors) {
  const std::string dir = fixture_path("jetpack/vit_moe_avg/");
  auto theirs = io::read_safetensors(dir + "model.safetensors");
  EXPECT_EQ(detect_key_layout(theirs), "jetpack");
  auto state = to_moejet_layout(theirs);
  EXPECT_EQ(detect_key_layout(state), "moejet");
  VisionTransformer model(vit_moe_avg_config());
  EXPECT_EQ(key_set(io::module_state_dict(*model)), key_set(state));
  auto report = io::load_state_dict(*model, state, {}, dir + "model.safetensors");
  ASSERT_TRUE(report.ok()) << report.summary();
  model->eval();
  auto io_ = io::read_safetensors(dir + "io.safetensors");
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(all_close(model->forward(io_["input"]), io_["logits"]));
}

TEST(JetpackParity, MmengineTrainingCheckpointLoadsWithItsLayoutReported) {
  // {"meta", "state_dict": {"model.<key>": ...}, "message_hub": <MessageHub object>, ...}: only the
  // weights are read; the prefix and the authors' names are mapped and both are reported.
  const std::string dir = fixture_path("jetpack/vit_moe_avg/");
  VisionTransformer model(vit_moe_avg_config());
  auto summary = models::load_model_weights(*model, dir + "mmengine_epoch_300.pth", false);
  EXPECT_NE(summary.find("mmengine checkpoint layout"), std::string::npos) << summary;
  EXPECT_NE(summary.find("MoE Jetpack authors' key layout: 20 keys renamed"), std::string::npos) << summary;
  model->eval();
  auto io_ = io::read_safetensors(dir + "io.safetensors");
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(all_close(model->forward(io_["input"]), io_["logits"]));
}

TEST(JetpackParity, LayoutsRoundTripAndDenseKeysAreUntouched) {
  auto theirs = io::read_safetensors(fixture_path("jetpack/vit_moe_avg/model.safetensors"));
  auto back = to_jetpack_layout(to_moejet_layout(theirs));
  ASSERT_EQ(back.keys(), theirs.keys());
  for (const auto& item : theirs) {
    EXPECT_TRUE(back[item.key()].equal(item.value())) << item.key();
  }
  auto dense = io::read_safetensors(fixture_path("timm/vit_small_custom/vit_small_custom.safetensors"));
  EXPECT_EQ(detect_key_layout(dense), "moejet");
  std::vector<std::string> notes;
  EXPECT_EQ(to_moejet_layout(dense, &notes).keys(), dense.keys());
  EXPECT_EQ(to_jetpack_layout(dense).keys(), dense.keys());
  EXPECT_TRUE(notes.empty());
  // Only whole segments after "mlp." are names of the authors: a dense key that merely contains
  // one is left alone.
  io::StateDict odd;
  odd.insert("blocks.0.mlp.scales.0x", torch::zeros({1}));
  odd.insert("blocks.0.attn.scales.0", torch::zeros({1}));
  EXPECT_EQ(to_moejet_layout(odd).keys(), odd.keys());
}
