// Checkpoint recycling: unit selection, METIS partitions, expert construction, statistics.

#include <numeric>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/dataset.h"
#include "moejet/graph/partition.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/vit.h"
#include "moejet/moe/moe_layer.h"
#include "moejet/recycle/recycle.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::recycle;

namespace {

models::VitConfig tiny_dense() {
  auto c = moejet::testing::tiny_vit();  // H = 64
  c.class_token = false;
  c.global_pool = "avg";
  return c;
}

models::VitConfig tiny_moe(const std::string& type, int64_t experts, double ratio) {
  auto c = tiny_dense();
  json moe = {{"type", type}, {"layers", {1}}};
  if (type == "sphero") {
    moe.update({{"core_experts", experts},
                {"universal_experts", 2 * experts},
                {"core_mlp_ratio", ratio},
                {"universal_mlp_ratio", ratio / 2}});
  } else {
    moe.update({{"num_experts", experts}, {"mlp_ratio", ratio}});
  }
  c.moe = moejet::testing::moe_config(moe);
  return c;
}

moe::ExpertMlp group_of(models::VisionTransformerImpl& m, size_t g = 0) {
  return m.moe_layer_list.at(0).second->expert_groups().at(g).second;
}

std::shared_ptr<nn::Mlp> dense_mlp(models::VisionTransformerImpl& m, int64_t block) {
  return std::dynamic_pointer_cast<nn::Mlp>(m.block_list[block]->mlp);
}

}  // namespace

TEST(UnitSelection, PartitionOfDisjointExpertsSumsToTheDenseMlp) {
  torch::manual_seed(0);
  models::VisionTransformer dense(tiny_dense());
  for (auto method : {Method::Uniform, Method::Graph}) {
    models::VisionTransformer moe(tiny_moe("soft", 4, 1.0));  // 4 experts x 16 of the 64 units
    std::map<int64_t, UnitStats> stats;
    if (method == Method::Graph) {
      // Four cliques of 16 units: METIS must return them as the four parts.
      auto co = torch::zeros({64, 64});
      for (int64_t p = 0; p < 4; ++p)
        co.narrow(0, p * 16, 16).narrow(1, p * 16, 16).fill_(1.0);
      co += 0.01 * torch::rand({64, 64});
      stats[1].coactivation = co;
      stats[1].mean_abs = stats[1].mean_sq = stats[1].freq = torch::ones({64});
    }
    RecycleOptions o;
    o.method = method;
    o.rescale = false;
    o.uniform = "shifted";  // moejet's own grids and parts: disjoint experts
    o.graph = "balanced";
    auto report = recycle_model(*dense, *moe, stats, o);
    auto units = report["blocks"][0]["groups"][0]["units"].get<std::vector<std::vector<int64_t>>>();
    std::multiset<int64_t> all;
    for (const auto& u : units)
      all.insert(u.begin(), u.end());
    ASSERT_EQ(all.size(), 64u);
    EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 64u) << "experts overlap";

    auto x = torch::randn({5, 16});
    auto experts = group_of(*moe);
    experts->eval();
    auto y = experts->forward(x.unsqueeze(0).expand({4, 5, 16}).contiguous());  // [E, T, D]
    auto mlp = dense_mlp(*dense, 1);
    auto expected = mlp->forward(x);
    // Every expert carries the whole fc2 bias once; the partial sums add up to the dense MLP.
    auto sum = y.sum(0) - 3 * mlp->fc2->bias;
    EXPECT_TRUE(moejet::testing::all_close(sum, expected, 1e-5, 1e-5)) << method_name(method);
  }
}

TEST(UnitSelection, CopyMakesEveryExpertTheDenseMlpAndCopiesSharedWeights) {
  torch::manual_seed(1);
  models::VisionTransformer dense(tiny_dense());
  models::VisionTransformer moe(tiny_moe("sphero", 2, 4.0));  // core experts: all 64 units
  RecycleOptions o;
  o.method = Method::Copy;
  auto report = recycle_model(*dense, *moe, {}, o);
  auto x = torch::randn({3, 16});
  auto core = group_of(*moe, 0);
  core->eval();
  auto y = core->forward(x.unsqueeze(0).expand({2, 3, 16}).contiguous());
  auto expected = dense_mlp(*dense, 1)->forward(x);
  for (int64_t e = 0; e < 2; ++e) {
    EXPECT_TRUE(moejet::testing::all_close(y[e], expected, 1e-6, 1e-6));
  }
  EXPECT_EQ(report["blocks"][0]["groups"][0]["fc2_scale"].get<double>(), 1.0);
  // Universal experts (32 of 64 units): the first 32 units, fc2 columns as they are (the
  // authors' default); with moejet's rescale option, scaled by 64/32.
  auto uni = group_of(*moe, 1);
  auto w1 = dense_mlp(*dense, 1)->fc1->weight;
  EXPECT_TRUE(torch::equal(uni->fc1_weight[3], w1.narrow(0, 0, 32)));
  EXPECT_TRUE(torch::equal(uni->fc2_weight[3], dense_mlp(*dense, 1)->fc2->weight.narrow(1, 0, 32)));
  EXPECT_EQ(report["blocks"][0]["groups"][1]["fc2_scale"].get<double>(), 1.0);
  o.rescale = true;
  models::VisionTransformer rescaled(tiny_moe("sphero", 2, 4.0));
  auto report2 = recycle_model(*dense, *rescaled, {}, o);
  EXPECT_TRUE(
      torch::allclose(group_of(*rescaled, 1)->fc2_weight[3], dense_mlp(*dense, 1)->fc2->weight.narrow(1, 0, 32) * 2.0));
  EXPECT_EQ(report2["blocks"][0]["groups"][1]["fc2_scale"].get<double>(), 2.0);
  // Everything outside the MoE MLP is the dense model's, including the dense block's MLP.
  auto ds = io::module_state_dict(*dense), ms = io::module_state_dict(*moe);
  for (const auto& item : ds) {
    if (item.key().rfind("blocks.1.mlp.", 0) == 0) {
      EXPECT_EQ(ms.find(item.key()), nullptr) << item.key();
      continue;
    }
    ASSERT_NE(ms.find(item.key()), nullptr) << item.key();
    EXPECT_TRUE(torch::equal(ms[item.key()], item.value())) << item.key();
  }
}

TEST(UnitStats, ImportanceSamplingPicksTheUnitsThatFireOnACraftedInput) {
  torch::manual_seed(2);
  models::VisionTransformer dense(tiny_dense());
  // Block 1's units fire (or not) regardless of the input: zero fc1 weights, a bias of +3 for
  // the 16 chosen units and -6 (GELU ~ 0) for the rest.
  std::vector<int64_t> live;
  for (int64_t u = 0; u < 64; u += 4)
    live.push_back(u + (u / 4) % 4);
  {
    torch::NoGradGuard ng;
    auto mlp = dense_mlp(*dense, 1);
    mlp->fc1->weight.zero_();
    mlp->fc1->bias.fill_(-6.0);
    for (auto u : live)
      mlp->fc1->bias[u] = 3.0 + 0.01 * static_cast<double>(u);
  }
  auto images = torch::randint(0, 256, {40, 1, 8, 8}, torch::kUInt8);
  auto data = data::make_memory_dataset(images, std::vector<int64_t>(40, 0), {"a", "b", "c"}, "crafted");
  StatsOptions so;
  so.images = 32;
  so.batch_size = 8;
  so.num_workers = 0;
  so.quantile = 0.5;  // 48 of the 64 units are dead: the median activation is a dead one
  auto stats = collect_unit_stats(*dense, {1}, data, data::make_eval_transform({}, 1), so, torch::kCPU);
  ASSERT_EQ(stats.count(1), 1u);
  EXPECT_EQ(stats[1].tokens, 32 * 4);
  EXPECT_NEAR(stats[1].freq[live[0]].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(stats[1].freq[1].item<double>(), 0.0, 1e-6);
  EXPECT_FALSE(dense_mlp(*dense, 1)->on_hidden) << "the statistics hook must be removed";

  for (bool topk : {true, false}) {
    models::VisionTransformer moe(tiny_moe("soft", 3, 1.0));  // 3 experts x 16 units
    RecycleOptions o;
    o.method = Method::Importance;
    o.importance_topk = topk;
    auto report = recycle_model(*dense, *moe, stats, o);
    for (const auto& units : report["blocks"][0]["groups"][0]["units"]) {
      EXPECT_EQ(units.get<std::vector<int64_t>>(), live) << "topk=" << topk;
    }
    EXPECT_NEAR(report["blocks"][0]["groups"][0]["importance_share"][0].get<double>(), 1.0, 1e-3);
  }
}

TEST(UnitSelection, MethodsGiveDistinctSortedUnitsOfTheRightCount) {
  SelectionInput in;
  in.hidden = 96;
  in.experts = 7;
  in.units = 24;
  in.seed = 3;
  in.score = torch::rand({96});
  in.coactivation = torch::rand({96, 96});
  in.uniform = "shifted";  // the authors' linspace grid is the same for every expert (tested below)
  for (auto m : {Method::Copy, Method::Random, Method::Uniform, Method::Graph, Method::Importance}) {
    auto units = select_units(m, in);
    ASSERT_EQ(units.size(), 7u) << method_name(m);
    for (const auto& u : units) {
      ASSERT_EQ(u.size(), 24u) << method_name(m);
      EXPECT_TRUE(std::is_sorted(u.begin(), u.end()));
      EXPECT_EQ(std::set<int64_t>(u.begin(), u.end()).size(), 24u) << method_name(m);
      EXPECT_GE(u.front(), 0);
      EXPECT_LT(u.back(), 96);
    }
    if (m != Method::Copy) {
      EXPECT_NE(units[0], units[1]) << method_name(m) << ": experts should differ";
      EXPECT_NE(units[1], units[3]) << method_name(m) << ": experts should differ";
    }
    EXPECT_EQ(select_units(m, in), units) << method_name(m) << " is not reproducible";
  }
  in.units = 97;
  EXPECT_THROW(select_units(Method::Random, in), ConfigError);
  EXPECT_THROW(parse_method("louvain"), ConfigError);
}

TEST(UnitSelection, AuthorsUniformGridIsRoundedLinspaceForEveryExpert) {
  SelectionInput in;
  in.hidden = 4;
  in.experts = 3;
  in.units = 3;
  ASSERT_EQ(in.uniform, "linspace");
  // linspace(0, 3, 3) = 0, 1.5, 3; torch.round rounds half to even.
  auto units = select_units(Method::Uniform, in);
  for (const auto& u : units)
    EXPECT_EQ(u, (std::vector<int64_t>{0, 2, 3}));
  in.hidden = 1536;
  in.units = 768;
  units = select_units(Method::Uniform, in);
  EXPECT_EQ(units[2][1], 2);      // 1535/767 = 2.0013
  EXPECT_EQ(units[2][383], 766);  // 383 * 2.0013 = 766.5 -> 766 (round to nearest)
  EXPECT_EQ(units[2][767], 1535);
  in.uniform = "diagonal";
  EXPECT_THROW(select_units(Method::Uniform, in), ConfigError);
}

TEST(UnitSelection, AuthorsGraphDrawsWholeMetisPartsByTheirCoactivation) {
  // Four cliques of 16 units with internal co-activation 1, 2, 3 and 4 and no edges between
  // them: METIS (4 parts) returns the cliques, and each expert's first part is clique p with
  // probability p / 10.
  auto co = torch::zeros({64, 64});
  for (int64_t p = 0; p < 4; ++p)
    co.narrow(0, p * 16, 16).narrow(1, p * 16, 16).fill_(static_cast<double>(p + 1));
  SelectionInput in;
  in.hidden = 64;
  in.experts = 2000;
  in.units = 24;  // one whole clique, then the first 8 units of the next part drawn
  in.coactivation = co;
  in.graph_parts = 4;
  in.seed = 5;
  ASSERT_EQ(in.graph, "jetpack");
  auto units = select_units(Method::Graph, in);
  std::vector<double> first(4, 0.0);
  for (const auto& u : units) {
    ASSERT_EQ(u.size(), 24u);
    std::vector<int64_t> per_clique(4, 0);
    for (auto x : u)
      per_clique[x / 16]++;
    std::vector<int64_t> counts(per_clique);
    std::sort(counts.begin(), counts.end());
    ASSERT_EQ(counts, (std::vector<int64_t>{0, 0, 8, 16}));
    for (int64_t p = 0; p < 4; ++p) {
      if (per_clique[p] == 8) {  // the second part's lowest 8 units
        for (int64_t k = 0; k < 8; ++k)
          EXPECT_NE(std::find(u.begin(), u.end(), p * 16 + k), u.end());
      }
      if (per_clique[p] == 16)
        first[p] += 1.0 / 2000.0;
    }
  }
  for (int64_t p = 0; p < 4; ++p)
    EXPECT_NEAR(first[p], (p + 1) / 10.0, 0.035) << "clique " << p;
  EXPECT_EQ(select_units(Method::Graph, in), units);
}

TEST(UnitStats, AUnitFiresAboveZeroByDefaultOrAboveAQuantile) {
  auto a = torch::tensor({{1.0f, -0.1f, 0.0f, 2.0f}, {0.5f, -0.2f, 0.3f, 4.0f}});
  UnitStatsAccumulator authors(4, 0.0, true);
  authors.add(a);
  auto s = authors.finish();
  EXPECT_TRUE(torch::equal(s.freq, torch::tensor({1.0f, 0.0f, 0.5f, 1.0f})));
  EXPECT_EQ(s.coactivation[0][3].item<float>(), 1.0f);
  EXPECT_EQ(s.coactivation[0][2].item<float>(), 0.5f);
  UnitStatsAccumulator quantile(4, 0.75, false);  // the 6th of 8 values: 1.0
  quantile.add(a);
  EXPECT_TRUE(torch::equal(quantile.finish().freq, torch::tensor({0.0f, 0.0f, 0.0f, 1.0f})));
  EXPECT_THROW(UnitStatsAccumulator(4, 1.0), ConfigError);
}

TEST(GraphPartition, MetisPartsAreBalancedAndRecoverBlocks) {
  torch::manual_seed(4);
  auto a = torch::rand({200, 200});
  auto part = graph::partition_graph(a, 8, 0);
  std::vector<int64_t> sizes(8, 0);
  for (auto p : part)
    sizes.at(p)++;
  for (auto s : sizes) {
    EXPECT_LE(s, 26);  // at most 3% (METIS' ufactor) above the 25 per part
    EXPECT_GE(s, 20);
  }
  // Block-diagonal affinity (5 blocks of 6, shuffled): the blocks come back as the parts.
  auto perm = torch::randperm(30, torch::kLong);
  auto block = torch::zeros({30, 30});
  for (int64_t i = 0; i < 30; ++i)
    for (int64_t j = 0; j < 30; ++j)
      if (perm[i].item<int64_t>() / 6 == perm[j].item<int64_t>() / 6)
        block[i][j] = 1.0;
  auto p2 = graph::partition_graph(block + 0.01 * torch::rand({30, 30}), 5, 0);
  EXPECT_LT(graph::edge_cut(block, p2), 1e-9);
  EXPECT_THROW(graph::partition_graph(torch::rand({4, 5}), 2), ConfigError);
  EXPECT_THROW(graph::partition_graph(torch::rand({4, 4}), 5), ConfigError);
}

TEST(Recycle, BadInputsGetClearErrors) {
  models::VisionTransformer dense(tiny_dense());
  {  // experts wider than the dense MLP
    models::VisionTransformer moe(tiny_moe("soft", 2, 8.0));
    RecycleOptions o;
    o.method = Method::Random;
    EXPECT_TRUE(moejet::testing::throws_error<ConfigError>([&] { recycle_model(*dense, *moe, {}, o); },
                                                           {"128 hidden units", "blocks.1.mlp.fc1.weight [64, 16]"}));
  }
  {  // importance without statistics
    models::VisionTransformer moe(tiny_moe("soft", 2, 1.0));
    EXPECT_THROW(recycle_model(*dense, *moe, {}, RecycleOptions{}), ConfigError);
  }
  {  // a different width
    auto c = tiny_moe("soft", 2, 1.0);
    c.embed_dim = 32;
    models::VisionTransformer moe(c);
    RecycleOptions o;
    o.method = Method::Copy;
    EXPECT_THROW(recycle_model(*dense, *moe, {}, o), Error);
  }
}

TEST(Recycle, TheReportStructIsWhatTheReportFileSays) {
  torch::manual_seed(3);
  models::VisionTransformer dense(tiny_dense());
  RecycleSources sources;
  sources.dense.name = "dense checkpoint";
  sources.dense.model = dense.get();
  RecycleOptions o;
  o.method = Method::Uniform;
  models::VisionTransformer a(tiny_moe("sphero", 2, 1.0)), b(tiny_moe("sphero", 2, 1.0));
  const RecycleReport report = recycle_model_report(sources, *a, o);
  ASSERT_EQ(report.blocks.size(), 1u);
  EXPECT_EQ(report.blocks[0].block, 1);
  EXPECT_EQ(report.blocks[0].key, "blocks.1.mlp");
  ASSERT_EQ(report.blocks[0].groups.size(), 2u);
  const auto& core = report.blocks[0].groups[0];
  EXPECT_EQ(core.name, "core");
  EXPECT_EQ(core.experts, 2);
  EXPECT_EQ(core.hidden, 16);
  EXPECT_EQ(core.dense_hidden, 64);
  ASSERT_EQ(core.units.size(), 2u);
  EXPECT_EQ(core.units[0].size(), 16u);
  EXPECT_EQ(report.blocks[0].groups[1].name, "universal");
  EXPECT_TRUE(report.head_copied);
  // The JSON form is the report file, and the same inputs give the same experts and report.
  const json written = recycle_model(sources, *b, o);
  EXPECT_EQ(report.to_json(), written);
  EXPECT_EQ(written["blocks"][0]["groups"][0]["units"], json(core.units));
  EXPECT_TRUE(torch::equal(group_of(*a, 0)->fc1_weight, group_of(*b, 0)->fc1_weight));
}
