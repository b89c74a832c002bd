#include "moejet/data/preprocess.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "moejet/core/error.h"
#include "moejet/models/architectures.h"

namespace moejet::data {

namespace {

std::vector<double> per_channel_values(const std::vector<double>& v, int64_t channels, double fallback) {
  if (v.empty())
    return std::vector<double>(static_cast<size_t>(channels), fallback);
  if (v.size() == 1)
    return std::vector<double>(static_cast<size_t>(channels), v[0]);
  return v;
}

}  // namespace

Preprocess preprocess_of(const AugmentConfig& augment, int64_t channels, int64_t image_size,
                         std::vector<std::string> label_names) {
  Preprocess p;
  const int64_t size = augment.image_size > 0 ? augment.image_size : image_size;
  p.input_size = {channels, size, size};
  // The pipelines' own defaults for an empty mean / std (augment.cpp): 0.5.
  p.mean = per_channel_values(augment.mean, channels, 0.5);
  p.std = per_channel_values(augment.std, channels, 0.5);
  p.crop_pct = augment.crop_pct;
  p.interpolation = augment.interpolation;
  p.label_names = std::move(label_names);
  return p;
}

AugmentConfig eval_augment(const Preprocess& p) {
  AugmentConfig a;
  a.image_size = p.input_size.size() == 3 ? p.input_size[2] : 0;
  a.mean = p.mean;
  a.std = p.std;
  a.crop_pct = p.crop_pct;
  a.interpolation = p.interpolation;
  return a;
}

json to_pretrained_cfg(const Preprocess& p) {
  json j = {{"input_size", p.input_size},
            {"mean", p.mean},
            {"std", p.std},
            {"crop_pct", p.crop_pct},
            {"interpolation", p.interpolation}};
  if (!p.label_names.empty()) {
    j["num_classes"] = p.label_names.size();
    j["label_names"] = p.label_names;
  }
  return j;
}

Preprocess preprocess_from_pretrained_cfg(const json& j, const std::string& source) {
  Preprocess p;
  try {
    check<CheckpointError>(j.is_object(), "{}: pretrained_cfg is not a JSON object", source);
    p.input_size = j.at("input_size").get<std::vector<int64_t>>();
    p.mean = j.at("mean").get<std::vector<double>>();
    p.std = j.at("std").get<std::vector<double>>();
    p.crop_pct = j.at("crop_pct").get<double>();
    p.interpolation = j.at("interpolation").get<std::string>();
    if (j.contains("label_names"))
      p.label_names = j.at("label_names").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}: malformed pretrained_cfg: {}", source, e.what()));
  }
  check<CheckpointError>(p.input_size.size() == 3 && p.input_size[0] > 0 && p.input_size[1] > 0 && p.input_size[2] > 0,
                         "{}: pretrained_cfg.input_size must be [C, H, W], got [{}]", source,
                         fmt::join(p.input_size, ", "));
  const auto c = static_cast<size_t>(p.input_size[0]);
  check<CheckpointError>(p.mean.size() == c && p.std.size() == c,
                         "{}: pretrained_cfg mean/std need {} values, got {} / {}", source, c, p.mean.size(),
                         p.std.size());
  for (double s : p.std)
    check<CheckpointError>(s > 0, "{}: pretrained_cfg.std values must be > 0", source);
  check<CheckpointError>(p.crop_pct > 0 && p.crop_pct <= 1, "{}: pretrained_cfg.crop_pct must be in (0, 1]", source);
  check<CheckpointError>(p.interpolation == "bilinear" || p.interpolation == "bicubic" || p.interpolation == "nearest",
                         "{}: pretrained_cfg.interpolation '{}' (expected bilinear, bicubic or nearest)", source,
                         p.interpolation);
  return p;
}

std::optional<Preprocess> timm_default_preprocess(const std::string& preset, int64_t channels, int64_t image_size) {
  const models::Architecture* arch = models::architecture_of_preset(preset);
  if (arch == nullptr) {
    return std::nullopt;
  }
  const auto& d = arch->timm_preprocess;
  // One value stands for every channel; per-channel statistics fit only that many channels.
  if (d.mean.size() != 1 && static_cast<int64_t>(d.mean.size()) != channels) {
    return std::nullopt;
  }
  Preprocess p;
  p.input_size = {channels, image_size, image_size};
  p.interpolation = "bicubic";
  p.mean = per_channel_values(d.mean, channels, 0.0);
  p.std = per_channel_values(d.std, channels, 1.0);
  p.crop_pct = d.crop_pct;
  return p;
}

std::string describe(const Preprocess& p) {
  return fmt::format("input {}, mean [{}], std [{}], crop_pct {:g}, {}", fmt::join(p.input_size, "x"),
                     fmt::join(p.mean, ", "), fmt::join(p.std, ", "), p.crop_pct, p.interpolation);
}

}  // namespace moejet::data
