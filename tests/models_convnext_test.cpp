// ConvNeXt: timm key layout and logits against the fixture written by real timm code, presets,
// parameter and FLOP counts, config JSON.

#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::models;

namespace {

// timm.models.convnext.ConvNeXt(in_chans=3, num_classes=10, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)),
// the model of both timm ConvNeXt fixtures (the second with conv_mlp=True).
ConvNextConfig fixture_config() {
  ConvNextConfig c;
  c.num_classes = 10;
  c.depths = {1, 1, 2, 1};
  c.dims = {16, 32, 64, 128};
  c.img_size = 32;
  return c;
}

}  // namespace

TEST(ConvNext, MatchesTimmLogitsOnTheFixture) {
  const std::string dir = moejet::testing::fixture_path("timm/convnext_custom/");
  ConvNext model(fixture_config());
  EXPECT_EQ(count_parameters(*model), 270298);
  auto state = io::read_safetensors(dir + "convnext_custom.safetensors");
  auto ours = io::module_state_dict(*model);
  auto ok = ours.keys(), tk = state.keys();
  EXPECT_EQ(std::set<std::string>(ok.begin(), ok.end()), std::set<std::string>(tk.begin(), tk.end()));
  auto report = io::load_state_dict(*model, state, {}, "convnext_custom");
  ASSERT_TRUE(report.ok()) << report.summary();
  auto input = io::read_safetensors(dir + "input.safetensors")["input"];
  auto logits = io::read_safetensors(dir + "logits.safetensors")["logits"];
  model->eval();
  torch::NoGradGuard ng;
  EXPECT_TRUE(moejet::testing::all_close(model->forward(input), logits, 1e-4, 1e-5));
  // The comparison is sharp enough to notice a block without its layer scale.
  model->blocks[2][1]->gamma.fill_(1.0);
  EXPECT_FALSE(moejet::testing::all_close(model->forward(input), logits, 1e-4, 1e-5));
}

TEST(ConvNext, TimmConvMlpLayoutLoadsToLogitParity) {
  // timm's convnext_atto..nano are built with conv_mlp=True: 1x1-conv MLP weights [4C, C, 1, 1].
  const std::string dir = moejet::testing::fixture_path("timm/convnext_convmlp_custom/");
  ConvNext model(fixture_config());
  auto state = io::read_safetensors(dir + "convnext_convmlp_custom.safetensors");
  EXPECT_EQ(state["stages.0.blocks.0.mlp.fc1.weight"].sizes(), (std::vector<int64_t>{64, 16, 1, 1}));
  // As it is, the file does not fit: every block MLP weight is a shape mismatch.
  io::LoadOptions lenient;
  lenient.allow_missing = true;
  EXPECT_THROW(io::load_state_dict(*model, state, lenient, "convnext_convmlp_custom"), CheckpointError);
  std::vector<std::string> notes;
  auto adapted = model->adapt_checkpoint(state, &notes);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("conv_mlp layout: 10 1x1-conv MLP weights"), std::string::npos) << notes[0];
  auto report = io::load_state_dict(*model, adapted, {}, "convnext_convmlp_custom");
  ASSERT_TRUE(report.ok()) << report.summary();
  auto input = io::read_safetensors(dir + "input.safetensors")["input"];
  auto logits = io::read_safetensors(dir + "logits.safetensors")["logits"];
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(moejet::testing::all_close(model->forward(input), logits));
  // A Linear-layout file passes through unchanged, with no note.
  notes.clear();
  auto linear = io::read_safetensors(moejet::testing::fixture_path("timm/convnext_custom/convnext_custom.safetensors"));
  EXPECT_TRUE(model->adapt_checkpoint(linear, &notes)["stages.0.blocks.0.mlp.fc1.weight"].equal(
      linear["stages.0.blocks.0.mlp.fc1.weight"]));
  EXPECT_TRUE(notes.empty());
}

TEST(ConvNext, TinyPresetHasTimmsParameterCountAndFlops) {
  ConvNext tiny(convnext_preset("convnext_tiny"));
  EXPECT_EQ(count_parameters(*tiny), 28589128);  // timm convnext_tiny, 1000 classes
  double macs = 0;
  for (const auto& kv : tiny->macs_by_layer())
    macs += kv.second;
  EXPECT_NEAR(macs / 1e9, 4.46, 0.03);  // fvcore: 4.47 G for convnext_tiny at 224
  for (const char* name : {"convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano"}) {
    ConvNext m(convnext_preset(name));
    EXPECT_GT(count_parameters(*m), 3000000) << name;
  }
  auto x = torch::randn({2, 3, 64, 64});
  EXPECT_EQ(tiny->forward(x).sizes(), (std::vector<int64_t>{2, 1000}));
}

TEST(ConvNext, ConfigJsonRoundTripsAndRejectsUnknownKeys) {
  auto c = convnext_preset("convnext_pico");
  c.num_classes = 10;
  json j = c;
  auto back = convnext_config_from_json(j);
  EXPECT_EQ(back.dims, c.dims);
  EXPECT_EQ(back.depths, c.depths);
  EXPECT_EQ(back.num_classes, 10);
  EXPECT_THROW(convnext_config_from_json(json{{"dimz", 3}}), ConfigError);
  EXPECT_THROW(convnext_preset("convnext_huge_typo"), ConfigError);
  EXPECT_THROW(convnext_config_from_json(json{{"depths", {1, 1, 1}}}), ConfigError);
}
