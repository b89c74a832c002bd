#include "moejet/recycle/recycle.h"

#include <algorithm>
#include <set>

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

json recycle_model(const RecycleSources& sources, models::ImageClassifierImpl& moe, const RecycleOptions& options) {
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
  {
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
  }
  check<ConfigError>(
      options.universal_units == "auto" || options.universal_units == "draw" || options.universal_units == "reslice",
      "recycling: universal_units '{}' (expected auto, draw or reslice)", options.universal_units);
  torch::NoGradGuard ng;

  std::set<int64_t> moe_blocks;
  std::set<std::string> moe_prefixes;
  for (const auto& entry : moe.moe_layer_list) {
    moe_blocks.insert(entry.first);
    moe_prefixes.insert(moe.mlp_key(entry.first) + ".");
  }
  auto under_moe = [&](const std::string& key) {
    for (const auto& p : moe_prefixes) {
      if (key.rfind(p, 0) == 0)
        return true;
    }
    return false;
  };

  // 0. How each source maps onto the model.
  std::map<std::string, SourcePlan> plans;
  json source_reports = json::object();
  plans["dense"] = plan_source(sources.dense, moe, true, moe_blocks, options, 0);
  source_reports["dense"] = plans["dense"].report;
  size_t si = 1;
  for (const auto& [name, src] : sources.groups) {
    plans[name] = plan_source(src, moe, false, moe_blocks, options, si++);
    source_reports[name] = plans[name].report;
  }

  // 1. Shared weights: everything but the MoE blocks' MLPs, strictly (a depth or shape mismatch
  // is reported key by key), the head only when its shape fits.
  io::StateDict shared;
  const auto& dense_plan = plans["dense"];
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

  // 2. Experts from the sources' MLPs.
  json blocks = json::array();
  for (const auto& [b, layer] : moe.moe_layer_list) {
    json jb = {{"block", b}, {"key", moe.mlp_key(b)}, {"groups", json::array()}};
    size_t gi = 0;
    for (const auto& [name, group] : layer->expert_groups()) {
      const bool own = sources.groups.count(name) > 0;
      const RecycleSource& src = own ? sources.groups.at(name) : sources.dense;
      const SourcePlan& plan = plans.at(own ? name : "dense");
      const std::string mlp_key = src.model->mlp_key(b);
      auto mlp = std::dynamic_pointer_cast<nn::Mlp>(src.model->block_mlp(b));
      check<CheckpointError>(mlp != nullptr, "recycling: {} of {} is not a dense MLP", mlp_key, src.name);
      const auto& w1 = mlp->fc1->weight;  // [H, D]
      const auto& b1 = mlp->fc1->bias;    // [H]
      const auto& w2 = mlp->fc2->weight;  // [D, H]
      const auto& b2 = mlp->fc2->bias;    // [D]
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
      json jg = {{"name", name},
                 {"source", src.name},
                 {"experts", group->num_experts},
                 {"hidden", group->hidden},
                 {"dense_hidden", H}};
      if (st != nullptr) {
        importance = st->score(options.score);
        jg["tokens"] = st->tokens;
        jg["firing_threshold"] = st->threshold;
        auto imp = importance.contiguous();
        jg["unit_importance"] = std::vector<float>(imp.data_ptr<float>(), imp.data_ptr<float>() + imp.numel());
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
      const bool reslice = name == "universal" && (options.universal_units == "reslice" ||
                                                   (options.universal_units == "auto" && plan.narrowed));
      if (reslice) {
        in.units = std::clamp<int64_t>(H * group->dim / D, group->hidden, H);
      }
      auto units = select_units(options.method, in);
      if (reslice && in.units > group->hidden) {
        const auto positions = rounded_linspace(in.units, group->hidden);
        for (auto& u : units) {
          std::vector<int64_t> kept;
          kept.reserve(positions.size());
          for (auto p : positions)
            kept.push_back(u[static_cast<size_t>(p)]);
          u = std::move(kept);
        }
        jg["resliced_from"] = in.units;
      }
      const double scale = options.rescale ? static_cast<double>(H) / static_cast<double>(group->hidden) : 1.0;
      json shares = json::array();
      const double total_importance = importance.defined() ? importance.sum().item<double>() : 0.0;
      // The stream channels each expert reads and writes: the source's one set, or one per expert
      // drawn from this block's norm2 statistics.
      std::vector<std::vector<int64_t>> channels;
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
        channels = select_units(options.method, ci);
        jg["channels"] = channels;
      } else if (plan.narrowed) {
        channels.assign(static_cast<size_t>(group->num_experts), plan.channels);
      }
      for (int64_t e = 0; e < group->num_experts; ++e) {
        auto idx = torch::tensor(units[e], torch::kLong);
        torch::Tensor w1c = w1, w2c = w2, b2c = b2;
        if (!channels.empty()) {
          const auto ch = torch::tensor(channels[static_cast<size_t>(e)], torch::kLong);
          w1c = w1.index_select(1, ch);
          w2c = w2.index_select(0, ch);
          b2c = b2.index_select(0, ch);
        }
        group->fc1_weight[e].copy_(w1c.index_select(0, idx));
        group->fc1_bias[e].copy_(b1.index_select(0, idx));
        group->fc2_weight[e].copy_(w2c.index_select(1, idx) * scale);
        group->fc2_bias[e].copy_(b2c);
        if (importance.defined()) {
          shares.push_back(
              total_importance > 0 ? importance.index_select(0, idx).sum().item<double>() / total_importance : 0.0);
        }
      }
      jg["fc2_scale"] = scale;
      jg["units"] = units;
      if (importance.defined()) {
        jg["importance_share"] = shares;
      }
      jb["groups"].push_back(jg);
      ++gi;
    }
    blocks.push_back(jb);
  }
  auto has_head = [](const std::vector<std::string>& keys) {
    return std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return k.rfind("head.", 0) == 0; });
  };
  return json{{"method", method_name(options.method)},
              {"score", options.score},
              {"importance_topk", options.importance_topk},
              {"rescale", options.rescale},
              {"channels", options.channels},
              {"uniform", options.uniform},
              {"graph", options.graph},
              {"universal_units", options.universal_units},
              {"seed", options.seed},
              {"head_copied", !has_head(report.dropped) && !has_head(report.missing)},
              {"sources", source_reports},
              {"blocks", blocks}};
}

}  // namespace moejet::recycle
