#include "moejet/recycle/recycle.h"

#include <set>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/layers.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::recycle {

bool needs_stats(Method method) {
  return method == Method::Graph || method == Method::Importance;
}

namespace {

// Seeds differ per block and group so that no two groups draw the same units by construction.
uint64_t group_seed(uint64_t seed, int64_t block, size_t group) {
  return seed * 1000003ULL + static_cast<uint64_t>(block) * 101ULL + group;
}

}  // namespace

json recycle_model(const models::ImageClassifierImpl& dense, models::ImageClassifierImpl& moe,
                   const std::map<int64_t, UnitStats>& stats, const RecycleOptions& options) {
  check<ConfigError>(dense.arch() == moe.arch(), "recycling: the dense model is a {}, the MoE model a {}",
                     dense.arch(), moe.arch());
  check<ConfigError>(dense.num_blocks() == moe.num_blocks(),
                     "recycling: the dense model has {} blocks, the MoE model {}", dense.num_blocks(),
                     moe.num_blocks());
  check<ConfigError>(!moe.moe_layer_list.empty(), "recycling: the target model has no MoE blocks (model.moe)");
  torch::NoGradGuard ng;

  // 1. Shared weights: everything but the MoE blocks' MLPs, strictly (a width or depth mismatch
  // is reported key by key), the head only when its shape fits.
  std::set<std::string> moe_prefixes;
  for (const auto& entry : moe.moe_layer_list) {
    moe_prefixes.insert(moe.mlp_key(entry.first) + ".");
  }
  auto under_moe = [&](const std::string& key) {
    for (const auto& p : moe_prefixes) {
      if (key.rfind(p, 0) == 0) return true;
    }
    return false;
  };
  io::StateDict shared;
  for (const auto& item : io::module_state_dict(dense)) {
    if (!under_moe(item.key())) {
      shared.insert(item.key(), item.value());
    }
  }
  io::LoadOptions lo;
  lo.allow_missing = true;  // the MoE blocks' new parameters; checked below
  lo.drop_on_mismatch = {"head."};
  auto report = io::load_state_dict(moe, shared, lo, "dense checkpoint");
  for (const auto& key : report.missing) {
    // New parameters: the MoE blocks' own, Mobile V-MoE's model-level router, a new head.
    check<CheckpointError>(under_moe(key) || key.rfind("head.", 0) == 0 || key.rfind("router.", 0) == 0,
                           "recycling: the dense checkpoint lacks '{}', which the MoE model needs", key);
  }

  // 2. Experts from the dense MLPs.
  json blocks = json::array();
  for (const auto& [b, layer] : moe.moe_layer_list) {
    const std::string mlp_key = dense.mlp_key(b);
    auto mlp = std::dynamic_pointer_cast<models::Mlp>(dense.block_mlp(b));
    check<CheckpointError>(mlp != nullptr, "recycling: {} of the dense model is not a dense MLP", mlp_key);
    const auto& w1 = mlp->fc1->weight;  // [H, D]
    const auto& b1 = mlp->fc1->bias;    // [H]
    const auto& w2 = mlp->fc2->weight;  // [D, H]
    const auto& b2 = mlp->fc2->bias;    // [D]
    check<CheckpointError>(w1.defined() && b1.defined() && w2.defined() && b2.defined(),
                           "recycling: {} of the dense model lacks fc1/fc2 weights or biases", mlp_key);
    const int64_t H = w1.size(0), D = w1.size(1);
    const UnitStats* st = nullptr;
    if (auto it = stats.find(b); it != stats.end()) {
      st = &it->second;
    }
    check<ConfigError>(!needs_stats(options.method) || st != nullptr,
                       "recycling: method '{}' needs activation statistics of block {}", method_name(options.method),
                       b);
    json jb = {{"block", b}, {"key", mlp_key}, {"dense_hidden", H}, {"groups", json::array()}};
    torch::Tensor importance;
    if (st != nullptr) {
      importance = st->score(options.score);
      jb["tokens"] = st->tokens;
      jb["firing_threshold"] = st->threshold;
      auto imp = importance.contiguous();
      jb["unit_importance"] = std::vector<float>(imp.data_ptr<float>(), imp.data_ptr<float>() + imp.numel());
    }
    size_t gi = 0;
    for (const auto& [name, group] : layer->expert_groups()) {
      const std::string key = fmt::format("{}.{}.fc1.weight", mlp_key, name);
      check<CheckpointError>(group->dim == D,
                             "recycling: {} has width {} but the dense {}.fc1.weight is {} (width {}); "
                             "a wider dense checkpoint needs channel selection",
                             key, group->dim, mlp_key, io::shape_string(w1), D);
      check<ConfigError>(group->hidden <= H,
                         "recycling: {} experts need {} hidden units each ({}), but the dense "
                         "{}.fc1.weight {} has only {}",
                         name, group->hidden, key, mlp_key, io::shape_string(w1), H);
      SelectionInput in;
      in.hidden = H;
      in.experts = group->num_experts;
      in.units = group->hidden;
      in.seed = group_seed(options.seed, b, gi);
      in.importance_topk = options.importance_topk;
      if (st != nullptr) {
        in.score = importance;
        in.coactivation = st->coactivation;
      }
      auto units = select_units(options.method, in);
      const double scale = options.rescale ? static_cast<double>(H) / static_cast<double>(group->hidden) : 1.0;
      json shares = json::array();
      const double total_importance = importance.defined() ? importance.sum().item<double>() : 0.0;
      for (int64_t e = 0; e < group->num_experts; ++e) {
        auto idx = torch::tensor(units[e], torch::kLong);
        group->fc1_weight[e].copy_(w1.index_select(0, idx));
        group->fc1_bias[e].copy_(b1.index_select(0, idx));
        group->fc2_weight[e].copy_(w2.index_select(1, idx) * scale);
        group->fc2_bias[e].copy_(b2);
        if (importance.defined()) {
          shares.push_back(total_importance > 0 ? importance.index_select(0, idx).sum().item<double>() / total_importance
                                                : 0.0);
        }
      }
      json jg = {{"name", name}, {"experts", group->num_experts}, {"hidden", group->hidden},
                 {"fc2_scale", scale}, {"units", units}};
      if (importance.defined()) {
        jg["importance_share"] = shares;
      }
      jb["groups"].push_back(jg);
      ++gi;
    }
    blocks.push_back(jb);
  }
  return json{{"method", method_name(options.method)},
              {"score", options.score},
              {"importance_topk", options.importance_topk},
              {"rescale", options.rescale},
              {"seed", options.seed},
              {"head_copied", report.dropped.empty()},
              {"blocks", blocks}};
}

}  // namespace moejet::recycle
