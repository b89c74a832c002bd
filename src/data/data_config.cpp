#include "moejet/data/data_config.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

namespace moejet::data {

void DataConfig::validate() const {
  check<ConfigError>(train_limit >= 0 && eval_limit >= 0,
                     "config 'data.train_limit'/'data.eval_limit': must be >= 0, got {} / {}", train_limit, eval_limit);
  check<ConfigError>(num_workers >= 0, "config 'data.num_workers': must be >= 0");
  check<ConfigError>(
      train_range.empty() || (train_range.size() == 2 && train_range[0] >= 0 && train_range[0] < train_range[1]),
      "config 'data.train_range': expected [start, end) with 0 <= start < end");
  check<ConfigError>(max_image_pixels >= 0, "config 'data.max_image_pixels': must be >= 0 (0 = no limit), got {}",
                     max_image_pixels);
  check<ConfigError>(val_split >= 0.0 && val_split < 1.0, "config 'data.val_split': must be in [0, 1), got {}",
                     val_split);
}

DatasetPtr open_split(const DataConfig& config, const std::string& split, int64_t limit, uint64_t seed) {
  // With val_split, both splits are parts of the training split.
  const bool carved = config.val_split > 0;
  check<ConfigError>(!carved || split == config.train_split || split == config.eval_split,
                     "data.val_split: split '{}' is neither data.train_split nor data.eval_split", split);
  const bool train_part = split == config.train_split;
  auto ds = open_dataset(config.dataset, carved ? config.train_split : split, config.max_image_pixels);
  if ((train_part || carved) && !config.train_range.empty()) {
    const auto start = static_cast<size_t>(config.train_range[0]);
    const auto end = std::min(static_cast<size_t>(config.train_range[1]), ds->size());
    check<ConfigError>(start < end, "config 'data.train_range': [{}, {}) is empty for {} ({} images)", start,
                       config.train_range[1], config.dataset, ds->size());
    std::vector<size_t> idx(end - start);
    std::iota(idx.begin(), idx.end(), start);
    ds = subset(ds, std::move(idx), fmt::format("{} [{}, {})", ds->describe(), start, end));
  }
  if (!config.classes.empty()) {
    for (int64_t c : config.classes) {
      check<ConfigError>(c >= 0 && c < ds->num_classes(),
                         "config 'data.classes': class {} out of range for {} ({} classes)", c, config.dataset,
                         ds->num_classes());
    }
    ds = filter_classes(ds, config.classes);
  }
  if (carved) {
    // A fixed seed, independent of train.seed, so that every run and `moejet eval` hold out the
    // same images: per class, a shuffled round(val_split * n) of them (at least one).
    auto labels = ds->labels();
    std::map<int64_t, std::vector<size_t>> by_class;
    for (size_t i = 0; i < labels.size(); ++i)
      by_class[labels[i]].push_back(i);
    std::mt19937_64 rng(0x7661'6c5f'7370'6c74ULL);
    std::vector<size_t> held, rest;
    for (auto& [c, idx] : by_class) {
      std::shuffle(idx.begin(), idx.end(), rng);
      const auto n =
          std::max<size_t>(1, static_cast<size_t>(std::llround(config.val_split * static_cast<double>(idx.size()))));
      check<ConfigError>(n < idx.size(), "data.val_split {}: class {} has only {} image(s) to split", config.val_split,
                         c, idx.size());
      held.insert(held.end(), idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n));
      rest.insert(rest.end(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.end());
    }
    auto& part = train_part ? rest : held;
    std::sort(part.begin(), part.end());
    const auto what = train_part ? fmt::format("{} without its held-out {:g}", ds->describe(), config.val_split)
                                 : fmt::format("{}: held-out {:g} (data.val_split)", ds->describe(), config.val_split);
    ds = subset(ds, part, what);
  }
  return stratified_subset(ds, limit, seed);
}

DatasetPtr stratified_subset(DatasetPtr ds, int64_t limit, uint64_t seed) {
  if (limit > 0 && static_cast<size_t>(limit) < ds->size()) {
    // Seeded shuffle, then at most ceil(limit / K) per class: a small subset keeps the class
    // balance of the full split.
    std::vector<size_t> order(ds->size());
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(seed * 7919 + 17);
    std::shuffle(order.begin(), order.end(), rng);
    auto labels = ds->labels();
    const int64_t k = std::max<int64_t>(ds->num_classes(), 1);
    const int64_t per_class = (limit + k - 1) / k;
    std::map<int64_t, int64_t> taken;
    std::vector<size_t> chosen;
    for (size_t i : order) {
      if (static_cast<int64_t>(chosen.size()) >= limit) {
        break;
      }
      if (taken[labels[i]]++ < per_class) {
        chosen.push_back(i);
      }
    }
    std::sort(chosen.begin(), chosen.end());
    ds = subset(ds, chosen, fmt::format("{} ({} of {} images)", ds->describe(), chosen.size(), ds->size()));
  }
  return ds;
}

}  // namespace moejet::data
