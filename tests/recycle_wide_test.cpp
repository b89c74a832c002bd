// Recycling from a wider checkpoint: channel, head and unit selection recovers a narrow ViT
// hidden inside a zero-padded wide one; per-group sources; shape errors name the source.

#include <algorithm>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/augment.h"
#include "moejet/data/dataset.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/vit.h"
#include "moejet/recycle/recycle.h"
#include "moejet/recycle/weight_selection.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::recycle;

namespace {

models::VitConfig narrow_cfg() {
  auto c = moejet::testing::tiny_vit();  // heads of 8, 64 hidden units
  c.init_values = 0.5;                   // LayerScale, so that ls1/ls2 are narrowed too
  return c;
}

models::VitConfig wide_cfg() {
  auto c = narrow_cfg();
  c.embed_dim = 32;
  c.num_heads = 4;  // heads of 8
  return c;
}

std::vector<int64_t> sorted_subset(int64_t n, int64_t k) {
  auto p = torch::randperm(n, torch::kLong).narrow(0, 0, k);
  p = std::get<0>(p.sort()).contiguous();
  return std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + k);
}

// Where each narrow index lives in the wide model.
struct Embedding {
  std::vector<int64_t> channels;                   // 16 of 32
  std::vector<std::vector<int64_t>> heads, units;  // per block: 2 of 4 heads, 64 of 128 units
};

// Writes `narrow` into a zero `wide` model at the embedding's positions, written out index by
// index (independently of the library's selection code).
void embed(models::VisionTransformerImpl& narrow, models::VisionTransformerImpl& wide, const Embedding& e) {
  torch::NoGradGuard ng;
  for (auto& p : wide.parameters())
    p.zero_();
  auto n = io::module_state_dict(narrow);
  auto w = io::module_state_dict(wide);
  const auto& ch = e.channels;
  const int64_t D = 32, d = 16, hd = 8;
  auto put_rows = [&](const std::string& key, const std::vector<int64_t>& rows) {
    for (size_t i = 0; i < rows.size(); ++i)
      w[key][rows[i]].copy_(n[key][static_cast<int64_t>(i)]);
  };
  auto put_matrix = [&](const std::string& key, const std::vector<int64_t>& rows, const std::vector<int64_t>& cols) {
    for (size_t i = 0; i < rows.size(); ++i)
      for (size_t j = 0; j < cols.size(); ++j)
        w[key][rows[i]][cols[j]].copy_(n[key][static_cast<int64_t>(i)][static_cast<int64_t>(j)]);
  };
  for (size_t i = 0; i < ch.size(); ++i) {
    w["cls_token"].select(2, ch[i]).copy_(n["cls_token"].select(2, static_cast<int64_t>(i)));
    w["pos_embed"].select(2, ch[i]).copy_(n["pos_embed"].select(2, static_cast<int64_t>(i)));
    w["head.weight"].select(1, ch[i]).copy_(n["head.weight"].select(1, static_cast<int64_t>(i)));
  }
  w["head.bias"].copy_(n["head.bias"]);
  put_rows("patch_embed.proj.weight", ch);
  put_rows("patch_embed.proj.bias", ch);
  put_rows("norm.weight", ch);
  put_rows("norm.bias", ch);
  for (int64_t b = 0; b < 2; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    for (const char* k : {"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "ls1.gamma", "ls2.gamma",
                          "attn.proj.bias", "mlp.fc2.bias"}) {
      put_rows(p + k, ch);
    }
    std::vector<int64_t> qkv_wide, head_wide;  // q, k, v rows of the chosen heads; their channels
    for (int64_t part = 0; part < 3; ++part)
      for (size_t h = 0; h < e.heads[b].size(); ++h)
        for (int64_t j = 0; j < hd; ++j)
          qkv_wide.push_back(part * D + e.heads[b][h] * hd + j);
    for (size_t h = 0; h < e.heads[b].size(); ++h)
      for (int64_t j = 0; j < hd; ++j)
        head_wide.push_back(e.heads[b][h] * hd + j);
    ASSERT_EQ(qkv_wide.size(), static_cast<size_t>(3 * d));
    put_matrix(p + "attn.qkv.weight", qkv_wide, ch);
    put_rows(p + "attn.qkv.bias", qkv_wide);
    put_matrix(p + "attn.proj.weight", ch, head_wide);
    put_matrix(p + "mlp.fc1.weight", e.units[b], ch);
    put_rows(p + "mlp.fc1.bias", e.units[b]);
    put_matrix(p + "mlp.fc2.weight", ch, e.units[b]);
  }
}

data::DatasetPtr random_images(int64_t n) {
  auto images = torch::randint(0, 256, {n, 1, 8, 8}, torch::kUInt8);
  return data::make_memory_dataset(images, std::vector<int64_t>(n, 0), {"a", "b", "c"}, "random");
}

ModelStats wide_stats(models::VisionTransformerImpl& wide, const std::vector<int64_t>& blocks) {
  StatsOptions so;
  so.images = 24;
  so.batch_size = 8;
  so.num_workers = 0;
  so.coactivation = false;
  return collect_model_stats(wide, blocks, random_images(24), data::make_eval_transform({}, 1), so, torch::kCPU, true);
}

struct Fixture {
  models::VisionTransformer narrow{nullptr}, wide{nullptr};
  Embedding e;
  Fixture() {
    torch::manual_seed(3);
    narrow = models::VisionTransformer(narrow_cfg());
    {
      torch::NoGradGuard ng;  // non-trivial norms and biases everywhere
      for (auto& p : narrow->parameters()) {
        if (p.dim() == 1)
          p.uniform_(0.5, 1.5);
      }
    }
    wide = models::VisionTransformer(wide_cfg());
    e.channels = sorted_subset(32, 16);
    for (int b = 0; b < 2; ++b) {
      e.heads.push_back(sorted_subset(4, 2));
      e.units.push_back(sorted_subset(128, 64));
    }
    embed(*narrow, *wide, e);
  }
};

// Recycling sources with the fixture's wide model as the dense source.
RecycleSources wide_dense_source(const Fixture& f) {
  RecycleSources s;
  s.dense.name = "wide.safetensors";
  s.dense.model = f.wide.get();
  return s;
}

}  // namespace

TEST(RecycleWide, ImportanceSelectionRecoversTheNarrowModelHiddenInAZeroPaddedWideOne) {
  Fixture f;
  auto stats = wide_stats(*f.wide, {0, 1});
  for (bool topk : {true, false}) {
    models::VisionTransformer target(narrow_cfg());
    auto sources = wide_dense_source(f);
    sources.dense.stats = stats;
    RecycleOptions o;
    o.method = Method::Importance;
    o.importance_topk = topk;
    o.rescale = false;
    auto report = recycle_model(sources, *target, o);
    EXPECT_EQ(report["sources"]["dense"]["channels"].get<std::vector<int64_t>>(), f.e.channels) << topk;
    for (int b = 0; b < 2; ++b) {
      EXPECT_EQ(report["sources"]["dense"]["heads"][std::to_string(b)].get<std::vector<int64_t>>(), f.e.heads[b]);
    }
    auto x = torch::randn({5, 1, 8, 8});
    f.narrow->eval();
    target->eval();
    torch::NoGradGuard ng;
    EXPECT_TRUE(moejet::testing::all_close(target->forward(x), f.narrow->forward(x), 1e-5, 1e-5)) << "topk " << topk;
  }
  // Uniform selection is data-free and picks other channels: the logits differ.
  models::VisionTransformer target(narrow_cfg());
  auto sources = wide_dense_source(f);
  RecycleOptions o;
  o.method = Method::Uniform;
  o.rescale = false;
  recycle_model(sources, *target, o);
  auto x = torch::randn({5, 1, 8, 8});
  torch::NoGradGuard ng;
  f.narrow->eval();
  target->eval();
  EXPECT_FALSE(moejet::testing::all_close(target->forward(x), f.narrow->forward(x), 1e-3, 1e-3));
}

TEST(RecycleWide, CoreExpertsFromAWiderSourceAreTheNarrowMlpsAndUniversalOnesFromTheDenseSource) {
  Fixture f;
  auto cfg = narrow_cfg();
  cfg.moe.layers = {1};
  auto& sphero_options = cfg.moe.set<moe::SpheroMoeOptions>();
  sphero_options.core_experts = 2;
  sphero_options.universal_experts = 4;
  sphero_options.core_mlp_ratio = 4.0;       // 64 units: exactly the live ones of the wide MLP
  sphero_options.universal_mlp_ratio = 1.0;  // 16 units of the narrow MLP
  models::VisionTransformer moe(cfg);
  RecycleSources sources;
  sources.dense.name = "narrow.safetensors";
  sources.dense.model = f.narrow.get();
  sources.dense.stats.units = wide_stats(*f.narrow, {1}).units;
  sources.groups["core"].name = "wide.safetensors";
  sources.groups["core"].model = f.wide.get();
  sources.groups["core"].stats = wide_stats(*f.wide, {0, 1});
  RecycleOptions o;
  o.method = Method::Importance;
  o.importance_topk = true;
  o.rescale = false;
  o.channels = "shared";
  auto report = recycle_model(sources, *moe, o);
  EXPECT_EQ(report["sources"]["core"]["channels"].get<std::vector<int64_t>>(), f.e.channels);
  EXPECT_FALSE(report["sources"]["dense"].contains("channels")) << "the dense source has the model's width";
  auto core = report["blocks"][0]["groups"][0];
  EXPECT_EQ(core["source"], "wide.safetensors");
  EXPECT_EQ(core["units"][0].get<std::vector<int64_t>>(), f.e.units[1]);
  EXPECT_EQ(report["blocks"][0]["groups"][1]["source"], "narrow.safetensors");
  // Each core expert computes the narrow model's MLP of block 1 exactly.
  auto groups = moe->moe_layer_list[0].second->expert_groups();
  auto experts = groups.at(0).second;
  auto mlp = std::dynamic_pointer_cast<nn::Mlp>(f.narrow->block_mlp(1));
  auto x = torch::randn({6, 16});
  torch::NoGradGuard ng;
  experts->eval();
  auto y = experts->forward(x.unsqueeze(0).expand({2, 6, 16}).contiguous());
  for (int64_t e = 0; e < 2; ++e) {
    EXPECT_TRUE(moejet::testing::all_close(y[e], mlp->forward(x), 1e-5, 1e-5)) << "core expert " << e;
  }
  // Shared weights come from the narrow dense source as they are.
  EXPECT_TRUE(torch::equal(moe->block_list[0]->attn->qkv->weight, f.narrow->block_list[0]->attn->qkv->weight));
}

TEST(RecycleWide, ShapesThatCannotBeMetNameTheSourceTensorAndBothShapes) {
  Fixture f;
  using moejet::testing::throws_error;
  RecycleOptions o;
  o.method = Method::Uniform;
  {  // a narrower source for a wider model
    models::VisionTransformer target(wide_cfg());
    RecycleSources s;
    s.dense.name = "narrow.safetensors";
    s.dense.model = f.narrow.get();
    EXPECT_TRUE(
        throws_error<Error>([&] { recycle_model(s, *target, o); },
                            {"narrow.safetensors", "patch_embed.proj.weight", "[16, 1, 4, 4]", "[32, 1, 4, 4]"}));
  }
  {  // heads that cannot be taken whole: 2 heads of 16 in the source, 2 of 8 in the target
    auto c = wide_cfg();
    c.num_heads = 2;
    models::VisionTransformer odd(c);
    models::VisionTransformer target(narrow_cfg());
    RecycleSources s;
    s.dense.name = "odd.safetensors";
    s.dense.model = odd.get();
    EXPECT_TRUE(throws_error<Error>(
        [&] { recycle_model(s, *target, o); },
        {"odd.safetensors", "blocks.0.attn.qkv.weight", "[96, 32]", "[48, 16]", "width 16", "width 8"}));
  }
  {  // copy cannot choose channels
    models::VisionTransformer target(narrow_cfg());
    auto s = wide_dense_source(f);
    RecycleOptions copy;
    copy.method = Method::Copy;
    EXPECT_TRUE(throws_error<Error>([&] { recycle_model(s, *target, copy); },
                                    {"wide.safetensors", "copy", "16 of its 32 channels"}));
  }
  {  // an expert group the model does not have
    auto cfg = narrow_cfg();
    cfg.moe.layers = {1};
    auto& soft_options = cfg.moe.set<moe::SoftMoeOptions>();
    soft_options.num_experts = 2;
    models::VisionTransformer moe(cfg);
    RecycleSources s;
    s.dense.name = "narrow.safetensors";
    s.dense.model = f.narrow.get();
    s.groups["core"].name = "wide.safetensors";
    s.groups["core"].model = f.wide.get();
    EXPECT_TRUE(throws_error<Error>([&] { recycle_model(s, *moe, o); }, {"no expert group 'core'", "experts"}));
  }
}

TEST(RecycleWide, QkvRowsTakeTheSameHeadsFromQueriesKeysAndValues) {
  EXPECT_EQ(qkv_rows({1}, 2, 4), (std::vector<int64_t>{2, 3, 6, 7, 10, 11}));
  EXPECT_EQ(head_channels({0, 2}, 3), (std::vector<int64_t>{0, 1, 2, 6, 7, 8}));
}

TEST(RecycleWide, PerExpertChannelsAreDrawnFromEachBlocksNorm2StatisticsAsTheAuthors) {
  Fixture f;
  auto cfg = narrow_cfg();
  cfg.moe.layers = {1};
  auto& sphero_options = cfg.moe.set<moe::SpheroMoeOptions>();
  sphero_options.core_experts = 3;
  sphero_options.universal_experts = 2;
  sphero_options.core_mlp_ratio = 4.0;
  sphero_options.universal_mlp_ratio = 1.0;
  RecycleSources sources;
  sources.dense.name = "narrow.safetensors";
  sources.dense.model = f.narrow.get();
  sources.dense.stats.units = wide_stats(*f.narrow, {1}).units;
  sources.groups["core"].name = "wide.safetensors";
  sources.groups["core"].model = f.wide.get();
  sources.groups["core"].stats = wide_stats(*f.wide, {0, 1});
  RecycleOptions o;  // the default: channels per expert
  ASSERT_EQ(o.channels, "per-expert");
  o.method = Method::Importance;
  {
    // Sampled by importance, each expert draws only live channels (the others never fire), so
    // every core expert is the narrow MLP again.
    models::VisionTransformer moe(cfg);
    auto report = recycle_model(sources, *moe, o);
    EXPECT_FALSE(report["sources"]["core"]["channels"].is_array());
    auto core = report["blocks"][0]["groups"][0];
    ASSERT_EQ(core["channels"].size(), 3u);
    for (int e = 0; e < 3; ++e) {
      EXPECT_EQ(core["channels"][e].get<std::vector<int64_t>>(), f.e.channels) << "expert " << e;
    }
    EXPECT_FALSE(report["blocks"][0]["groups"][1].contains("channels")) << "universal: same-width dense source";
  }
  // Random selection: each expert its own channel set, and its weights are those channels' rows
  // and columns of the wide MLP.
  o.method = Method::Random;
  models::VisionTransformer moe(cfg);
  auto report = recycle_model(sources, *moe, o);
  auto core = report["blocks"][0]["groups"][0];
  auto ch0 = core["channels"][0].get<std::vector<int64_t>>();
  auto ch1 = core["channels"][1].get<std::vector<int64_t>>();
  EXPECT_NE(ch0, ch1);
  auto experts = moe->moe_layer_list[0].second->expert_groups().at(0).second;
  auto wide_mlp = std::dynamic_pointer_cast<nn::Mlp>(f.wide->block_mlp(1));
  for (int e = 0; e < 3; ++e) {
    auto ch = torch::tensor(core["channels"][e].get<std::vector<int64_t>>(), torch::kLong);
    auto units = torch::tensor(core["units"][e].get<std::vector<int64_t>>(), torch::kLong);
    EXPECT_TRUE(torch::equal(experts->fc1_weight[e], wide_mlp->fc1->weight.index_select(0, units).index_select(1, ch)));
    EXPECT_TRUE(torch::equal(experts->fc2_weight[e], wide_mlp->fc2->weight.index_select(0, ch).index_select(1, units)));
    EXPECT_TRUE(torch::equal(experts->fc2_bias[e], wide_mlp->fc2->bias.index_select(0, ch)));
  }
}

TEST(RecycleWide, UniversalExpertsFromAWiderSourceAreReslicedFromACoreSizedDrawAsTheAuthors) {
  Fixture f;
  auto cfg = narrow_cfg();
  cfg.moe.layers = {1};
  auto& sphero_options = cfg.moe.set<moe::SpheroMoeOptions>();
  sphero_options.core_experts = 2;
  sphero_options.universal_experts = 3;
  sphero_options.core_mlp_ratio = 4.0;
  sphero_options.universal_mlp_ratio = 1.0;  // 16 units; a core-sized draw from the wide source is 128 * 16/32 = 64
  RecycleSources sources;
  sources.dense.name = "narrow.safetensors";
  sources.dense.model = f.narrow.get();
  sources.dense.stats.units = wide_stats(*f.narrow, {1}).units;
  sources.groups["universal"].name = "wide.safetensors";
  sources.groups["universal"].model = f.wide.get();
  sources.groups["universal"].stats = wide_stats(*f.wide, {0, 1});
  RecycleOptions o;
  ASSERT_EQ(o.universal_units, "auto");
  o.method = Method::Importance;
  // Only the 64 embedded units fire, so the importance draw of 64 is exactly them, and each
  // universal expert keeps positions round(linspace(0, 63, 16)) of it: the same 16 units.
  std::vector<int64_t> expected;
  const auto& live = f.e.units[1];
  for (int j = 0; j < 16; ++j)
    expected.push_back(live[static_cast<size_t>(std::nearbyint(j * 63.0 / 15.0))]);
  {
    models::VisionTransformer moe(cfg);
    auto report = recycle_model(sources, *moe, o);
    auto uni = report["blocks"][0]["groups"][1];
    ASSERT_EQ(uni["name"], "universal");
    EXPECT_EQ(uni["resliced_from"].get<int64_t>(), 64);
    for (int e = 0; e < 3; ++e) {
      EXPECT_EQ(uni["units"][e].get<std::vector<int64_t>>(), expected) << "expert " << e;
    }
  }
  // "draw": each universal expert draws its own 16 of the 64 live units.
  o.universal_units = "draw";
  models::VisionTransformer moe(cfg);
  auto report = recycle_model(sources, *moe, o);
  auto uni = report["blocks"][0]["groups"][1];
  EXPECT_FALSE(uni.contains("resliced_from"));
  EXPECT_NE(uni["units"][0].get<std::vector<int64_t>>(), uni["units"][1].get<std::vector<int64_t>>());
  o.universal_units = "sometimes";
  EXPECT_THROW(recycle_model(sources, *moe, o), ConfigError);
}
