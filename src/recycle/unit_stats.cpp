#include "moejet/recycle/unit_stats.h"

#include <algorithm>
#include <optional>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/progress.h"
#include "moejet/data/loader.h"
#include "moejet/models/vit.h"
#include "moejet/nn/feed_forward.h"

namespace moejet::recycle {

torch::Tensor UnitStats::score(const std::string& kind) const {
  if (kind == "l1") {
    return mean_abs;
  }
  if (kind == "l2") {
    // The authors' torch.norm(a, p=2) over all tokens: sqrt(tokens * mean a^2), of which only the
    // proportions matter to the selection.
    return mean_sq.sqrt();
  }
  if (kind == "l2sq") {
    return mean_sq;
  }
  if (kind == "freq") {
    return freq;
  }
  throw ConfigError(fmt::format("unknown importance score '{}' (expected l2, l1, l2sq or freq)", kind));
}

UnitStatsAccumulator::UnitStatsAccumulator(int64_t hidden, double quantile, bool coactivation, double threshold)
    : hidden_(hidden), quantile_(quantile), coactivation_(coactivation) {
  check<ConfigError>(quantile >= 0.0 && quantile < 1.0,
                     "firing quantile must be in (0, 1), or 0 for a fixed threshold; got {}", quantile);
  if (quantile == 0.0) {
    have_threshold_ = true;
    threshold_ = threshold;
  }
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  sum_abs_ = torch::zeros({hidden}, opts);
  sum_sq_ = torch::zeros({hidden}, opts);
  count_ = torch::zeros({hidden}, opts);
  if (coactivation) {
    co_ = torch::zeros({hidden, hidden}, opts);
  }
}

void UnitStatsAccumulator::add(const torch::Tensor& activations) {
  check<ConfigError>(activations.size(-1) == hidden_, "unit statistics: expected {} hidden units, got {}", hidden_,
                     activations.size(-1));
  torch::NoGradGuard ng;
  auto a = activations.detach().reshape({-1, hidden_}).to(torch::kCPU, torch::kFloat);
  if (a.size(0) == 0) {
    return;
  }
  if (!have_threshold_) {
    // kthvalue over at most 1M values keeps this cheap for big first batches.
    auto flat = a.reshape({-1});
    if (flat.numel() > (1 << 20)) {
      flat = flat.index_select(0, torch::randperm(flat.numel(), torch::kLong).narrow(0, 0, 1 << 20));
    }
    const int64_t k = std::clamp<int64_t>(static_cast<int64_t>(quantile_ * flat.numel()), 1, flat.numel());
    threshold_ = std::get<0>(flat.kthvalue(k)).item<double>();
    have_threshold_ = true;
  }
  sum_abs_ += a.abs().sum(0).to(torch::kDouble);
  sum_sq_ += a.square().sum(0).to(torch::kDouble);
  auto fired = a.gt(threshold_).to(torch::kFloat);
  count_ += fired.sum(0).to(torch::kDouble);
  if (coactivation_) {
    co_ += fired.t().mm(fired).to(torch::kDouble);
  }
  tokens_ += a.size(0);
}

UnitStats UnitStatsAccumulator::finish() const {
  check<ConfigError>(tokens_ > 0, "unit statistics: no activations were seen");
  UnitStats s;
  const double n = static_cast<double>(tokens_);
  s.mean_abs = (sum_abs_ / n).to(torch::kFloat);
  s.mean_sq = (sum_sq_ / n).to(torch::kFloat);
  s.freq = (count_ / n).to(torch::kFloat);
  if (coactivation_) {
    s.coactivation = (co_ / n).to(torch::kFloat);
  }
  s.threshold = threshold_;
  s.tokens = tokens_;
  return s;
}

std::map<int64_t, UnitStats> collect_unit_stats(models::ImageClassifierImpl& dense, const std::vector<int64_t>& blocks,
                                                data::DatasetPtr data, data::Transform transform,
                                                const StatsOptions& options, torch::Device device) {
  return collect_model_stats(dense, blocks, std::move(data), std::move(transform), options, device, false).units;
}

ModelStats collect_model_stats(models::ImageClassifierImpl& dense, const std::vector<int64_t>& blocks,
                               data::DatasetPtr data, data::Transform transform, const StatsOptions& options,
                               torch::Device device, bool channels) {
  check<ConfigError>(options.images > 0, "unit statistics need at least one image");
  // std::map keeps element addresses stable, so the hooks may point into it.
  std::map<int64_t, UnitStatsAccumulator> acc, chan_acc, ctx_acc;
  std::vector<std::shared_ptr<nn::Mlp>> hooked;
  std::vector<models::AttentionImpl*> hooked_attn;
  auto* vit = dynamic_cast<models::VisionTransformerImpl*>(&dense);
  for (int64_t b : blocks) {
    check<ConfigError>(b >= 0 && b < dense.num_blocks(), "block {} is out of range for a dense model of {} blocks", b,
                       dense.num_blocks());
    auto mlp = std::dynamic_pointer_cast<nn::Mlp>(dense.block_mlp(b));
    check<ConfigError>(mlp != nullptr, "{} of the dense model is not a dense MLP to gather statistics from",
                       dense.mlp_key(b));
    acc.emplace(b, UnitStatsAccumulator(mlp->fc1->weight.size(0), options.quantile, options.coactivation));
    auto* a = &acc.at(b);
    mlp->on_hidden = [a](const torch::Tensor& h) { a->add(h); };
    if (channels) {
      chan_acc.emplace(b, UnitStatsAccumulator(mlp->fc1->weight.size(1), options.quantile, options.coactivation));
      auto* c = &chan_acc.at(b);
      mlp->on_input = [c](const torch::Tensor& x) { c->add(x); };
      if (vit != nullptr) {
        auto* attn = vit->block_list[b]->attn.get();
        ctx_acc.emplace(b, UnitStatsAccumulator(vit->config.embed_dim, options.quantile, false));
        auto* h = &ctx_acc.at(b);
        attn->on_context = [h](const torch::Tensor& x) { h->add(x); };
        hooked_attn.push_back(attn);
      }
    }
    hooked.push_back(mlp);
  }
  struct Unhook {  // the hooks point into the accumulators: never leave them behind, even on error
    std::vector<std::shared_ptr<nn::Mlp>>& mlps;
    std::vector<models::AttentionImpl*>& attns;
    ~Unhook() {
      for (auto& m : mlps) {
        m->on_hidden = nullptr;
        m->on_input = nullptr;
      }
      for (auto* a : attns) {
        a->on_context = nullptr;
      }
    }
  } unhook{hooked, hooked_attn};

  const int64_t images = std::min<int64_t>(options.images, static_cast<int64_t>(data->size()));
  data::LoaderOptions lo;
  lo.batch_size = std::min(options.batch_size, images);
  lo.shuffle = true;
  lo.drop_last = false;
  lo.num_workers = options.num_workers;
  lo.seed = options.seed;
  data::Loader loader(data, std::move(transform), lo);
  loader.start_epoch(0);
  const bool was_training = dense.is_training();
  dense.eval();
  torch::NoGradGuard ng;
  auto progress = start_progress(options.progress, "unit statistics", images, "img");
  int64_t seen = 0;
  data::Batch batch;
  while (seen < images && loader.next(batch)) {
    auto x = batch.images;
    if (seen + x.size(0) > images) {
      x = x.narrow(0, 0, images - seen);
    }
    dense.forward(x.to(device));
    seen += x.size(0);
    progress->advance(x.size(0));
  }
  progress->finish();
  dense.train(was_training);
  ModelStats out;
  for (auto& [b, a] : acc) {
    out.units.emplace(b, a.finish());
  }
  for (auto& [b, a] : chan_acc) {
    out.channels.emplace(b, a.finish());
  }
  for (auto& [b, a] : ctx_acc) {
    out.context.emplace(b, a.finish());
  }
  return out;
}

}  // namespace moejet::recycle
