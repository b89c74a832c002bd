#include "moejet/recycle/recycle.h"

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/vit.h"
#include "moejet/moe/moe_layer.h"
#include "moejet/nn/feed_forward.h"
#include "moejet/recycle/weight_selection.h"

namespace moejet::recycle {

bool needs_stats(Method method) {
  return method == Method::Graph || method == Method::Importance;
}

namespace {

// Seeds differ per block and group so that no two groups draw the same units by construction.
uint64_t group_seed(uint64_t seed, int64_t block, size_t group) {
  return seed * 1000003ULL + static_cast<uint64_t>(block) * 101ULL + group;
}

const models::VisionTransformerImpl* as_vit(const models::ImageClassifierImpl& m) {
  return dynamic_cast<const models::VisionTransformerImpl*>(&m);
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = i;
  return v;
}

// How one source maps onto the target: its channel set and, per block, its heads and (for the
// dense source) dense MLP units. Identity maps when the widths agree.
struct SourcePlan {
  std::vector<int64_t> channels;  // when narrowed: the source channels, one per model channel
  bool narrowed = false;
  VitSelection selection;  // filled for a narrowed ViT
  json report;
};

// Selects `keep` of `n` items with the recycling method: channels and heads are "one expert".
// Keeping all of them is no choice at all (and needs no statistics).
std::vector<int64_t> select_one(Method method, int64_t n, int64_t keep, uint64_t seed, const torch::Tensor& score,
                                const torch::Tensor& coactivation, bool topk, const std::string& uniform,
                                const std::string& graph) {
  if (keep == n) {
    return iota(n);
  }
  SelectionInput in;
  in.hidden = n;
  in.experts = 1;
  in.units = keep;
  in.seed = seed;
  in.score = score;
  in.coactivation = coactivation;
  in.importance_topk = topk;
  in.uniform = uniform;
  in.graph = graph;
  return select_units(method, in).at(0);
}

// Mean over blocks of a per-block statistic.
torch::Tensor mean_over(const std::map<int64_t, UnitStats>& per_block,
                        const std::function<torch::Tensor(const UnitStats&)>& get) {
  torch::Tensor sum;
  for (const auto& [b, st] : per_block) {
    auto t = get(st);
    if (!t.defined())
      return {};
    sum = sum.defined() ? sum + t : t.clone();
  }
  return sum.defined() ? sum / static_cast<double>(per_block.size()) : sum;
}

SourcePlan plan_source(const RecycleSource& src, const models::ImageClassifierImpl& target, bool is_dense,
                       const std::set<int64_t>& moe_blocks, const RecycleOptions& o, size_t source_index) {
  SourcePlan plan;
  const auto* sv = as_vit(*src.model);
  const auto* tv = as_vit(target);
  plan.report = {{"file", src.name}};
  if (!is_wider(*src.model, target)) {
    plan.report["width"] = "same";  // channels map one to one (per stage for ConvNeXt)
    return plan;
  }
  check<ConfigError>(sv != nullptr && tv != nullptr,
                     "{}: selecting channels from a wider checkpoint is implemented for ViT only (source {}, "
                     "target {})",
                     src.name, src.model->arch(), target.arch());
  const auto& sc = sv->config;
  const auto& tc = tv->config;
  check_vit_selectable(sc, tc, src.name, is_dense);
  check<ConfigError>(o.method != Method::Copy || sc.embed_dim == tc.embed_dim,
                     "{}: method 'copy' cannot select {} of its {} channels; use random, uniform, graph or "
                     "importance for a wider source",
                     src.name, tc.embed_dim, sc.embed_dim);
  const bool stats = needs_stats(o.method);
  const uint64_t seed = o.seed * 1000003ULL + 7919ULL * (source_index + 1);
  plan.narrowed = true;
  plan.report["width"] = sc.embed_dim;
  if (!is_dense && o.channels == "per-expert") {
    plan.report["channels"] = "per expert (blocks[].groups[].channels)";
    return plan;  // an expert source: only its MLPs are read, each expert with its own channels
  }
  // One channel set for the whole residual stream of this source.
  torch::Tensor ch_score, ch_co;
  if (stats && sc.embed_dim != tc.embed_dim) {
    check<ConfigError>(!src.stats.channels.empty(),
                       "{}: method '{}' needs channel statistics (norm2 outputs) of the wider source", src.name,
                       method_name(o.method));
    ch_score = mean_over(src.stats.channels, [&](const UnitStats& s) { return s.score(o.score); });
    ch_co = mean_over(src.stats.channels, [](const UnitStats& s) { return s.coactivation; });
  }
  plan.channels =
      select_one(o.method, sc.embed_dim, tc.embed_dim, seed, ch_score, ch_co, o.importance_topk, o.uniform, o.graph);
  plan.selection.channels = plan.channels;
  plan.selection.rescale = o.rescale;
  plan.report["channels"] = plan.channels;
  if (ch_score.defined()) {
    auto s = ch_score.contiguous();
    plan.report["channel_importance"] = std::vector<float>(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
  }
  if (!is_dense) {
    return plan;  // an expert source: only its MLPs are read
  }
  // Whole heads per block, ranked by their output (graph has no head graph: the same ranking).
  const int64_t hd = sc.embed_dim / sc.num_heads;
  const Method head_method = o.method == Method::Graph ? Method::Importance : o.method;
  json heads = json::object();
  for (int64_t b = 0; b < sc.depth; ++b) {
    torch::Tensor score;
    if (stats) {
      auto it = src.stats.context.find(b);
      check<ConfigError>(it != src.stats.context.end(), "{}: no attention statistics for block {}", src.name, b);
      score = it->second.score(o.score).view({sc.num_heads, hd}).sum(1);
    }
    plan.selection.heads[b] = select_one(head_method, sc.num_heads, tc.num_heads, seed + 31ULL * (b + 1), score, {},
                                         o.importance_topk, o.uniform, o.graph);
    heads[std::to_string(b)] = plan.selection.heads[b];
    // Dense MLPs outside the MoE blocks: their hidden units, as an expert's.
    if (!moe_blocks.count(b)) {
      torch::Tensor uscore, uco;
      if (stats) {
        auto it = src.stats.units.find(b);
        check<ConfigError>(it != src.stats.units.end(), "{}: no unit statistics for block {}", src.name, b);
        uscore = it->second.score(o.score);
        uco = it->second.coactivation;
      }
      plan.selection.units[b] = select_one(o.method, sc.mlp_hidden(), tc.mlp_hidden(), seed + 37ULL * (b + 1), uscore,
                                           uco, o.importance_topk, o.uniform, o.graph);
    }
  }
  plan.report["heads"] = heads;
  return plan;
}

}  // namespace

bool is_wider(const models::ImageClassifierImpl& source, const models::ImageClassifierImpl& target) {
  const auto* sv = as_vit(source);
  const auto* tv = as_vit(target);
  if (sv != nullptr && tv != nullptr) {
    return sv->config.embed_dim != tv->config.embed_dim || sv->config.num_heads != tv->config.num_heads ||
           sv->config.mlp_hidden() != tv->config.mlp_hidden();
  }
  for (int64_t b = 0; b < std::min(source.num_blocks(), target.num_blocks()); ++b) {
    if (source.block_dim(b) != target.block_dim(b))
      return true;
  }
  return false;
}

json recycle_model(const models::ImageClassifierImpl& dense, models::ImageClassifierImpl& moe,
                   const std::map<int64_t, UnitStats>& stats, const RecycleOptions& options) {
  RecycleSources sources;
  sources.dense.name = "dense checkpoint";
  sources.dense.model = &dense;
  sources.dense.stats.units = stats;
  return recycle_model(sources, moe, options);
}

namespace {

// Everything rejected here is rejected before any weight is read or written.
void validate_sources(const RecycleSources& sources, const models::ImageClassifierImpl& moe,
                      const RecycleOptions& options) {
  const auto& dense = *sources.dense.model;
  check<ConfigError>(dense.arch() == moe.arch(), "recycling: the dense model is a {}, the MoE model a {}", dense.arch(),
                     moe.arch());
  check<ConfigError>(dense.num_blocks() == moe.num_blocks(),
                     "recycling: the dense model has {} blocks, the MoE model {}", dense.num_blocks(),
                     moe.num_blocks());
  // A dense target is plain weight selection, which only means something from a wider source.
  check<ConfigError>(!moe.moe_layer_list.empty() || is_wider(dense, moe),
                     "recycling: the target model has no MoE blocks (model.moe) and {} has its width; load it with "
                     "train --init instead",
                     sources.dense.name);
  std::set<std::string> names;
  if (!moe.moe_layer_list.empty()) {
    for (const auto& g : moe.moe_layer_list.front().second->expert_groups())
      names.insert(g.first);
  }
  for (const auto& [name, src] : sources.groups) {
    check<ConfigError>(names.count(name), "recycling: the MoE model has no expert group '{}' (it has: {})", name,
                       fmt::join(names, ", "));
    check<ConfigError>(
        src.model != nullptr && src.model->arch() == moe.arch() && src.model->num_blocks() == moe.num_blocks(),
        "{}: the source for the {} experts must be a {} of {} blocks", src.name, name, moe.arch(), moe.num_blocks());
  }
  check<ConfigError>(
      options.universal_units == "auto" || options.universal_units == "draw" || options.universal_units == "reslice",
      "recycling: universal_units '{}' (expected auto, draw or reslice)", options.universal_units);
}

// How every source maps onto the model, decided before anything is copied.
struct RecyclePlan {
  std::set<int64_t> moe_blocks;
  std::set<std::string> moe_prefixes;         // "<MLP key>." of each MoE block
  std::map<std::string, SourcePlan> sources;  // "dense", and each group with its own source

  // The MoE blocks' MLPs are what the experts replace, so the shared weights leave them out.
  bool under_moe(const std::string& key) const {
    for (const auto& p : moe_prefixes) {
      if (key.rfind(p, 0) == 0)
        return true;
    }
    return false;
  }
};

RecyclePlan plan_recycle(const RecycleSources& sources, const models::ImageClassifierImpl& moe,
                         const RecycleOptions& options) {
  RecyclePlan plan;
  for (const auto& entry : moe.moe_layer_list) {
    plan.moe_blocks.insert(entry.first);
    plan.moe_prefixes.insert(moe.mlp_key(entry.first) + ".");
  }
  // Source indices (0 for the dense one) give each source its own selection seed.
  plan.sources["dense"] = plan_source(sources.dense, moe, true, plan.moe_blocks, options, 0);
  size_t si = 1;
  for (const auto& [name, src] : sources.groups) {
    plan.sources[name] = plan_source(src, moe, false, plan.moe_blocks, options, si++);
  }
  return plan;
}

// Shared weights: everything but the MoE blocks' MLPs, strictly (a depth or shape mismatch is
// reported key by key), the head only when its shape fits. Returns whether the head was copied.
bool load_shared(const RecycleSources& sources, const RecyclePlan& plan, models::ImageClassifierImpl& moe) {
  const auto& dense = *sources.dense.model;
  auto under_moe = [&plan](const std::string& key) { return plan.under_moe(key); };
  io::StateDict shared;
  const auto& dense_plan = plan.sources.at("dense");
  if (dense_plan.narrowed) {
    shared = select_vit_weights(io::module_state_dict(dense), as_vit(dense)->config, as_vit(moe)->config,
                                dense_plan.selection, sources.dense.name, under_moe);
  } else {
    for (const auto& item : io::module_state_dict(dense)) {
      if (!under_moe(item.key())) {
        shared.insert(item.key(), item.value());
      }
    }
  }
  io::LoadOptions lo;
  lo.allow_missing = true;  // the MoE blocks' new parameters; checked below
  lo.drop_on_mismatch = {"head."};
  auto report = io::load_state_dict(moe, shared, lo, sources.dense.name);
  for (const auto& key : report.missing) {
    // New parameters: the MoE blocks' own, Mobile V-MoE's model-level router, a new head.
    check<CheckpointError>(under_moe(key) || key.rfind("head.", 0) == 0 || key.rfind("router.", 0) == 0,
                           "recycling: {} lacks '{}', which the MoE model needs", sources.dense.name, key);
  }
  auto has_head = [](const std::vector<std::string>& keys) {
    return std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return k.rfind("head.", 0) == 0; });
  };
  return !has_head(report.dropped) && !has_head(report.missing);
}

// One expert group of one MoE block: the source MLP its experts are cut from, and what each
// expert takes of it.
struct GroupCut {
  moe::ExpertMlp group{nullptr};
  std::shared_ptr<nn::Mlp> mlp;
  std::vector<std::vector<int64_t>> units;     // per expert: source hidden units
  std::vector<std::vector<int64_t>> channels;  // per expert: source stream channels; empty: all of them
  double scale = 1.0;                          // of fc2's weight
  RecycleReport::Group report;
};

struct BlockCut {
  int64_t block = 0;
  std::string key;
  std::vector<GroupCut> groups;
};

GroupCut plan_group(const RecycleSources& sources, const RecyclePlan& recycle_plan,
                    const models::ImageClassifierImpl& moe, const RecycleOptions& options, int64_t b, size_t gi,
                    const std::string& name, const moe::ExpertMlp& group) {
  const bool own = sources.groups.count(name) > 0;
  const RecycleSource& src = own ? sources.groups.at(name) : sources.dense;
  const SourcePlan& plan = recycle_plan.sources.at(own ? name : "dense");
  GroupCut cut;
  cut.group = group;
  const std::string mlp_key = src.model->mlp_key(b);
  cut.mlp = std::dynamic_pointer_cast<nn::Mlp>(src.model->block_mlp(b));
  check<CheckpointError>(cut.mlp != nullptr, "recycling: {} of {} is not a dense MLP", mlp_key, src.name);
  const auto& w1 = cut.mlp->fc1->weight;  // [H, D]
  const auto& b1 = cut.mlp->fc1->bias;    // [H]
  const auto& w2 = cut.mlp->fc2->weight;  // [D, H]
  const auto& b2 = cut.mlp->fc2->bias;    // [D]
  check<CheckpointError>(w1.defined() && b1.defined() && w2.defined() && b2.defined(),
                         "recycling: {} of {} lacks fc1/fc2 weights or biases", mlp_key, src.name);
  const int64_t H = w1.size(0), D = w1.size(1);
  const std::string key = fmt::format("{}.{}.fc1.weight", moe.mlp_key(b), name);
  // Per-expert channel sets (no shared set) have the model's width by construction.
  const int64_t width = !plan.narrowed          ? D
                        : plan.channels.empty() ? group->dim
                                                : static_cast<int64_t>(plan.channels.size());
  check<CheckpointError>(group->dim == width && group->dim <= D,
                         "recycling: {} has width {} but {}: {}.fc1.weight is {} (width {}){}", key, group->dim,
                         src.name, mlp_key, io::shape_string(w1), D,
                         D < group->dim ? "; a source must be at least as wide as the model" : "");
  check<ConfigError>(group->hidden <= H,
                     "recycling: {} experts need {} hidden units each ({}), but {}: {}.fc1.weight {} has "
                     "only {}",
                     name, group->hidden, key, src.name, mlp_key, io::shape_string(w1), H);
  const UnitStats* st = nullptr;
  if (auto it = src.stats.units.find(b); it != src.stats.units.end()) {
    st = &it->second;
  }
  check<ConfigError>(!needs_stats(options.method) || st != nullptr,
                     "recycling: method '{}' needs activation statistics of block {} of {}",
                     method_name(options.method), b, src.name);
  torch::Tensor importance;
  RecycleReport::Group& jg = cut.report;
  jg.name = name;
  jg.source = src.name;
  jg.experts = group->num_experts;
  jg.hidden = group->hidden;
  jg.dense_hidden = H;
  if (st != nullptr) {
    importance = st->score(options.score);
    jg.tokens = st->tokens;
    jg.firing_threshold = st->threshold;
    auto imp = importance.contiguous();
    jg.unit_importance = std::vector<float>(imp.data_ptr<float>(), imp.data_ptr<float>() + imp.numel());
  }
  SelectionInput in;
  in.hidden = H;
  in.experts = group->num_experts;
  in.units = group->hidden;
  in.seed = group_seed(options.seed, b, gi);
  in.importance_topk = options.importance_topk;
  in.uniform = options.uniform;
  in.graph = options.graph;
  if (st != nullptr) {
    in.score = importance;
    in.coactivation = st->coactivation;
  }
  // The authors cut every expert at the channel ratio of its source, H * D_model / D_source
  // units, and re-slice the universal ones down to their size (gen:366, 806-833).
  const bool reslice = name == "universal" &&
                       (options.universal_units == "reslice" || (options.universal_units == "auto" && plan.narrowed));
  if (reslice) {
    in.units = std::clamp<int64_t>(H * group->dim / D, group->hidden, H);
  }
  cut.units = select_units(options.method, in);
  if (reslice && in.units > group->hidden) {
    const auto positions = rounded_linspace(in.units, group->hidden);
    for (auto& u : cut.units) {
      std::vector<int64_t> kept;
      kept.reserve(positions.size());
      for (auto p : positions)
        kept.push_back(u[static_cast<size_t>(p)]);
      u = std::move(kept);
    }
    jg.resliced_from = in.units;
  }
  cut.scale = options.rescale ? static_cast<double>(H) / static_cast<double>(group->hidden) : 1.0;
  // The stream channels each expert reads and writes: the source's one set, or one per expert
  // drawn from this block's norm2 statistics.
  if (plan.narrowed && options.channels == "per-expert") {
    SelectionInput ci;
    ci.hidden = D;
    ci.experts = group->num_experts;
    ci.units = group->dim;
    ci.seed = group_seed(options.seed, b, gi) ^ 0x9e3779b97f4a7c15ULL;
    ci.importance_topk = options.importance_topk;
    if (needs_stats(options.method)) {
      auto it = src.stats.channels.find(b);
      check<ConfigError>(it != src.stats.channels.end(),
                         "recycling: method '{}' needs channel statistics (norm2 outputs) of block {} of {}",
                         method_name(options.method), b, src.name);
      ci.score = it->second.score(options.score);
      ci.coactivation = it->second.coactivation;
    }
    cut.channels = select_units(options.method, ci);
    jg.channels = cut.channels;
  } else if (plan.narrowed) {
    cut.channels.assign(static_cast<size_t>(group->num_experts), plan.channels);
  }
  jg.fc2_scale = cut.scale;
  jg.units = cut.units;
  if (importance.defined()) {
    const double total_importance = importance.sum().item<double>();
    std::vector<double> shares;
    for (int64_t e = 0; e < group->num_experts; ++e) {
      auto idx = torch::tensor(cut.units[e], torch::kLong);
      shares.push_back(total_importance > 0 ? importance.index_select(0, idx).sum().item<double>() / total_importance
                                            : 0.0);
    }
    jg.importance_share = std::move(shares);
  }
  return cut;
}

// Called only after the shared weights are loaded: a source that fails both the shared load and
// an expert check must keep reporting the shared load's error. Group indices seed the draws.
std::vector<BlockCut> plan_experts(const RecycleSources& sources, const RecyclePlan& plan,
                                   const models::ImageClassifierImpl& moe, const RecycleOptions& options) {
  std::vector<BlockCut> blocks;
  for (const auto& [b, layer] : moe.moe_layer_list) {
    BlockCut block;
    block.block = b;
    block.key = moe.mlp_key(b);
    size_t gi = 0;
    for (const auto& [name, group] : layer->expert_groups()) {
      block.groups.push_back(plan_group(sources, plan, moe, options, b, gi, name, group));
      ++gi;
    }
    blocks.push_back(std::move(block));
  }
  return blocks;
}

// fc1 rows and fc1 bias entries of each expert's units, fc2 columns of the same units, fc2 bias
// whole: so each expert alone is a thinner version of the source MLP.
void copy_experts(const std::vector<BlockCut>& blocks) {
  for (const auto& block : blocks) {
    for (const auto& cut : block.groups) {
      const auto& w1 = cut.mlp->fc1->weight;
      const auto& b1 = cut.mlp->fc1->bias;
      const auto& w2 = cut.mlp->fc2->weight;
      const auto& b2 = cut.mlp->fc2->bias;
      const auto& group = cut.group;
      for (int64_t e = 0; e < group->num_experts; ++e) {
        auto idx = torch::tensor(cut.units[e], torch::kLong);
        torch::Tensor w1c = w1, w2c = w2, b2c = b2;
        if (!cut.channels.empty()) {
          const auto ch = torch::tensor(cut.channels[static_cast<size_t>(e)], torch::kLong);
          w1c = w1.index_select(1, ch);
          w2c = w2.index_select(0, ch);
          b2c = b2.index_select(0, ch);
        }
        group->fc1_weight[e].copy_(w1c.index_select(0, idx));
        group->fc1_bias[e].copy_(b1.index_select(0, idx));
        group->fc2_weight[e].copy_(w2c.index_select(1, idx) * cut.scale);
        group->fc2_bias[e].copy_(b2c);
      }
    }
  }
}

}  // namespace

json RecycleReport::to_json() const {
  json source_reports = json::object();
  for (const auto& [name, report] : sources) {
    source_reports[name] = report;
  }
  json jblocks = json::array();
  for (const auto& block : blocks) {
    json jb = {{"block", block.block}, {"key", block.key}, {"groups", json::array()}};
    for (const auto& g : block.groups) {
      json jg = {{"name", g.name},
                 {"source", g.source},
                 {"experts", g.experts},
                 {"hidden", g.hidden},
                 {"dense_hidden", g.dense_hidden}};
      if (g.tokens) {
        jg["tokens"] = *g.tokens;
      }
      if (g.firing_threshold) {
        jg["firing_threshold"] = *g.firing_threshold;
      }
      if (g.unit_importance) {
        jg["unit_importance"] = *g.unit_importance;
      }
      if (g.resliced_from) {
        jg["resliced_from"] = *g.resliced_from;
      }
      if (g.channels) {
        jg["channels"] = *g.channels;
      }
      jg["fc2_scale"] = g.fc2_scale;
      jg["units"] = g.units;
      if (g.importance_share) {
        json shares = json::array();
        for (double s : *g.importance_share)
          shares.push_back(s);
        jg["importance_share"] = shares;
      }
      jb["groups"].push_back(jg);
    }
    jblocks.push_back(jb);
  }
  return json{{"method", method_name(options.method)},
              {"score", options.score},
              {"importance_topk", options.importance_topk},
              {"rescale", options.rescale},
              {"channels", options.channels},
              {"uniform", options.uniform},
              {"graph", options.graph},
              {"universal_units", options.universal_units},
              {"seed", options.seed},
              {"head_copied", head_copied},
              {"sources", source_reports},
              {"blocks", jblocks}};
}

RecycleReport recycle_model_report(const RecycleSources& sources, models::ImageClassifierImpl& moe,
                                   const RecycleOptions& options) {
  validate_sources(sources, moe, options);
  torch::NoGradGuard ng;
  const RecyclePlan plan = plan_recycle(sources, moe, options);
  RecycleReport report;
  report.options = options;
  for (const auto& [name, source] : plan.sources) {
    report.sources[name] = source.report;
  }
  report.head_copied = load_shared(sources, plan, moe);
  auto blocks = plan_experts(sources, plan, moe, options);
  copy_experts(blocks);
  for (auto& block : blocks) {
    RecycleReport::Block rb;
    rb.block = block.block;
    rb.key = block.key;
    for (auto& cut : block.groups)
      rb.groups.push_back(std::move(cut.report));
    report.blocks.push_back(std::move(rb));
  }
  return report;
}

json recycle_model(const RecycleSources& sources, models::ImageClassifierImpl& moe, const RecycleOptions& options) {
  return recycle_model_report(sources, moe, options).to_json();
}

}  // namespace moejet::recycle
