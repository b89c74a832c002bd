// ViT: timm compatibility (keys, shapes and logits against fixtures written by real timm code),
// presets, FLOP/param counts and position-embedding resampling.

#include <torch/torch.h>

#include <set>

#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/vit.h"
#include "moejet/models/vit_checkpoint.h"
#include "moejet/nn/dropout.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::models;

namespace {

std::string fixture(const std::string& name, const std::string& file) {
  return moejet::testing::fixture_path("timm/" + name + "/" + file);
}

void expect_timm_logits(const std::string& name, const VitConfig& cfg) {
  auto state = io::read_safetensors(fixture(name, name + ".safetensors"));
  auto input = io::read_safetensors(fixture(name, "input.safetensors"))["input"];
  auto logits = io::read_safetensors(fixture(name, "logits.safetensors"))["logits"];
  VisionTransformer model(cfg);
  // Every timm key maps onto a moejet parameter of the same shape, and nothing is left over.
  auto ours = io::module_state_dict(*model);
  auto ours_list = ours.keys();
  auto timm_list = state.keys();
  std::set<std::string> ours_keys(ours_list.begin(), ours_list.end());
  std::set<std::string> timm_keys(timm_list.begin(), timm_list.end());
  EXPECT_EQ(ours_keys, timm_keys);
  auto report = io::load_state_dict(*model, state, {}, name);
  EXPECT_TRUE(report.ok()) << report.summary();
  model->eval();
  torch::NoGradGuard ng;
  auto out = model->forward(input);
  EXPECT_TRUE(moejet::testing::all_close(out, logits, 1e-4, 1e-5));
}

}  // namespace

TEST(VitTimm, ClassTokenModelMatchesTimmLogits) {
  VitConfig c;
  c.img_size = 32;
  c.patch_size = 4;
  c.in_chans = 3;
  c.num_classes = 10;
  c.embed_dim = 64;
  c.depth = 2;
  c.num_heads = 2;
  expect_timm_logits("vit_small_custom", c);
}

TEST(VitTimm, AvgPoolModelWithFcNormMatchesTimmLogits) {
  VitConfig c;
  c.img_size = 28;
  c.patch_size = 7;
  c.in_chans = 1;
  c.num_classes = 10;
  c.embed_dim = 64;
  c.depth = 2;
  c.num_heads = 2;
  c.global_pool = "avg";
  c.class_token = false;
  expect_timm_logits("vit_gap_custom", c);
}

TEST(VitTimm, WrongLayerNormEpsIsDetectedByTheFixture) {
  // Guards the fixture comparison itself: a known-wrong model must fail it.
  VitConfig c;
  c.img_size = 32;
  c.patch_size = 4;
  c.num_classes = 10;
  c.embed_dim = 64;
  c.depth = 2;
  c.num_heads = 2;
  c.norm_eps = 1e-5;
  VisionTransformer model(c);
  io::load_state_dict(*model, io::read_safetensors(fixture("vit_small_custom", "vit_small_custom.safetensors")));
  model->eval();
  torch::NoGradGuard ng;
  auto input = io::read_safetensors(fixture("vit_small_custom", "input.safetensors"))["input"];
  auto logits = io::read_safetensors(fixture("vit_small_custom", "logits.safetensors"))["logits"];
  EXPECT_FALSE(moejet::testing::all_close(model->forward(input), logits, 1e-4, 1e-5));
}

TEST(VitPresets, ParameterAndFlopCountsMatchTimm) {
  // timm: vit_tiny_patch16_224 5,717,416 params; vit_small 22,050,664; vit_base 86,567,656.
  struct Row {
    const char* name;
    int64_t params;
    double gmacs;
  };
  for (Row r : {Row{"vit_tiny_patch16_224", 5717416, 1.26}, Row{"vit_small_patch16_224", 22050664, 4.6},
                Row{"vit_base_patch16_224", 86567656, 17.58}}) {
    VisionTransformer m(vit_preset(r.name));
    EXPECT_EQ(count_parameters(*m), r.params) << r.name;
    double macs = 0;
    for (auto& kv : m->macs_by_layer()) {
      macs += kv.second;
    }
    EXPECT_NEAR(macs / 1e9, r.gmacs, 0.03) << r.name;
  }
  EXPECT_THROW(vit_preset("vit_nonexistent"), ConfigError);
}

TEST(VitConfigJson, RoundTripsAndRejectsUnknownKeys) {
  VitConfig c = vit_preset("vit_small_patch16_224");
  c.num_classes = 10;
  c.global_pool = "avg";
  c.drop_path_rate = 0.1;
  json j = c;
  VitConfig back = vit_config_from_json(j);
  EXPECT_EQ(json(back), j);
  json bad = j;
  bad["embed_dims"] = 3;
  EXPECT_TRUE(moejet::testing::throws_error<ConfigError>([&] { vit_config_from_json(bad); }, {"model.embed_dims"}));
  json heads = j;
  heads["num_heads"] = 5;
  EXPECT_THROW(vit_config_from_json(heads), ConfigError);
  json preset = {{"preset", "vit_tiny_patch16_224"}, {"num_classes", 7}};
  auto p = vit_config_from_json(preset);
  EXPECT_EQ(p.embed_dim, 192);
  EXPECT_EQ(p.num_classes, 7);
}

TEST(VitModel, ShapesPoolingAndLayerIds) {
  VitConfig c;
  c.img_size = 28;
  c.patch_size = 7;
  c.in_chans = 1;
  c.num_classes = 10;
  c.embed_dim = 32;
  c.depth = 3;
  c.num_heads = 4;
  VisionTransformer m(c);
  auto x = torch::randn({5, 1, 28, 28});
  EXPECT_EQ(m->forward_features(x).sizes(), (std::vector<int64_t>{5, 17, 32}));
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(m->layer_id("pos_embed"), 0);
  EXPECT_EQ(m->layer_id("patch_embed.proj.weight"), 0);
  EXPECT_EQ(m->layer_id("blocks.2.mlp.fc1.weight"), 3);
  EXPECT_EQ(m->layer_id("head.weight"), 4);
  EXPECT_THROW(m->forward(torch::randn({2, 3, 28, 28})), c10::Error);
}

TEST(VitModel, DropPathIsIdentityInEvalAndStochasticInTraining) {
  auto x = torch::ones({1000, 4});
  EXPECT_TRUE(nn::drop_path(x, 0.3, false).equal(x));
  auto y = nn::drop_path(x, 0.3, true);
  auto zero_rows = (y.sum(1) == 0).sum().item<int64_t>();
  EXPECT_GT(zero_rows, 200);
  EXPECT_LT(zero_rows, 400);
  EXPECT_NEAR(y.mean().item<double>(), 1.0, 0.1);  // rescaled to keep the expectation
}

TEST(VitCheckpoint, PosEmbedResamplingKeepsPrefixAndInterpolatesGrid) {
  // A linear ramp over the grid stays a ramp under bilinear resampling; the class token is kept.
  auto grid = torch::arange(16, torch::kFloat).reshape({1, 4, 4, 1}).expand({1, 4, 4, 3});
  auto pe = torch::cat({torch::full({1, 1, 3}, 42.0), grid.reshape({1, 16, 3})}, 1);
  auto out = resample_pos_embed(pe, 8, 8, 1, "bilinear");
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 65, 3}));
  EXPECT_EQ(out[0][0][0].item<float>(), 42.0f);
  auto same = resample_pos_embed(pe, 4, 4, 1, "bicubic");
  EXPECT_TRUE(same.equal(pe));

  VitConfig c;
  c.img_size = 32;
  c.patch_size = 4;
  c.num_classes = 10;
  c.embed_dim = 3;
  c.depth = 0;
  c.num_heads = 1;
  io::StateDict sd;
  sd.insert("pos_embed", pe);
  std::vector<std::string> notes;
  auto filtered = filter_vit_checkpoint(sd, c, "bicubic", &notes);
  EXPECT_EQ(filtered["pos_embed"].sizes(), (std::vector<int64_t>{1, 65, 3}));
  EXPECT_EQ(notes.size(), 1u);
  // Into a model without a class token, the prefix token is dropped.
  c.class_token = false;
  c.global_pool = "avg";
  filtered = filter_vit_checkpoint(sd, c, "bicubic", &notes);
  EXPECT_EQ(filtered["pos_embed"].sizes(), (std::vector<int64_t>{1, 64, 3}));
}

TEST(VitModel, DropoutKeepsTheExpectationAndIsIdentityInEval) {
  auto x = torch::ones({200000});
  EXPECT_TRUE(nn::dropout(x, 0.4, false).equal(x));
  auto y = nn::dropout(x, 0.4, true);
  const double zero_frac = (y == 0).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(zero_frac, 0.4, 0.01);
  EXPECT_NEAR(y.mean().item<double>(), 1.0, 0.01);
  EXPECT_NEAR(y.max().item<double>(), 1.0 / 0.6, 1e-6);
}

TEST(VitModel, DropoutMaskIsSeededSharedWithTheBackwardAndWorksOnViewsAndDoubles) {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    auto x = torch::randn({301, 64}, torch::TensorOptions().dtype(dtype)).t().requires_grad_(true);
    ASSERT_FALSE(x.is_contiguous());
    torch::manual_seed(3);
    auto y = nn::dropout(x, 0.25, true);
    torch::manual_seed(3);
    auto y_again = nn::dropout(x, 0.25, true);
    auto y_next = nn::dropout(x, 0.25, true);
    EXPECT_TRUE(y.equal(y_again)) << "same seed, same mask";
    EXPECT_FALSE(y.equal(y_next)) << "the generator advances";
    auto kept = y.ne(0);
    EXPECT_TRUE(torch::allclose(y, torch::where(kept, x / 0.75, torch::zeros_like(x)), 1e-6, 1e-7));
    auto w = torch::randn(x.sizes(), x.options());
    (y * w).sum().backward();
    // dy/dx is the same mask, scaled: the backward must not draw a new one.
    EXPECT_TRUE(torch::allclose(x.grad(), torch::where(kept, w / 0.75, torch::zeros_like(w)), 1e-6, 1e-7));
    const double frac = kept.to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(frac, 0.75, 0.02);
  }
  // Odd sizes (the kernel draws two elements per 64-bit word) and tiny tensors.
  for (int64_t n : {1, 2, 3, 7}) {
    auto y = nn::dropout(torch::ones({n}), 0.5, true);
    EXPECT_TRUE((y.eq(0) | y.eq(2.0)).all().item<bool>()) << n;
  }
  EXPECT_THROW(nn::dropout(torch::ones({4}), 1.0, true), c10::Error);
}

TEST(VitCheckpoint, ClassTokenCheckpointIntoAnAveragePoolingModelDropsTheFinalNorm) {
  // timm's ViT-T (class token, final norm) loaded into V-JetMoE-T's head (avg pool + fc_norm):
  // the final norm is dropped and fc_norm starts at 1, 0, as the MoE Jetpack authors' init does.
  VitConfig token;
  token.img_size = 32;
  token.patch_size = 8;
  token.embed_dim = 16;
  token.depth = 1;
  token.num_heads = 2;
  token.num_classes = 4;
  VisionTransformer src(token);
  torch::NoGradGuard ng;
  src->norm->weight.fill_(3.0);
  VitConfig avg = token;
  avg.global_pool = "avg";
  VisionTransformer dst(avg);
  std::vector<std::string> notes;
  auto adapted = dst->adapt_checkpoint(io::module_state_dict(*src), &notes);
  EXPECT_FALSE(adapted.contains("norm.weight"));
  EXPECT_TRUE(adapted["fc_norm.weight"].equal(torch::ones({16})));
  EXPECT_TRUE(adapted["fc_norm.bias"].equal(torch::zeros({16})));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("norm: dropped"), std::string::npos) << notes[0];
  EXPECT_TRUE(io::load_state_dict(*dst, adapted, {}, "token-pool ViT").ok());
  // A file that already has fc_norm keeps it.
  notes.clear();
  auto same = dst->adapt_checkpoint(io::module_state_dict(*dst), &notes);
  EXPECT_TRUE(notes.empty());
}
