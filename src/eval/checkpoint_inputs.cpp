#include "moejet/eval/checkpoint_inputs.h"

#include <spdlog/spdlog.h>

#include "moejet/core/error.h"
#include "moejet/models/model_file.h"

namespace moejet::eval {

ResolvedPreprocess resolve_preprocess(const io::Metadata& metadata, const std::string& checkpoint,
                                      const std::string& preset, const models::ModelConfig& model,
                                      const PreprocessOverrides& overrides) {
  ResolvedPreprocess r;
  auto& pre = r.preprocess;
  const int64_t channels = model.in_chans();
  if (auto it = metadata.find(models::kPretrainedCfgKey); it != metadata.end()) {
    pre = data::preprocess_from_pretrained_cfg(parse_json(it->second, checkpoint), checkpoint);
    r.source = "stored in the checkpoint";
  } else if (auto d = data::timm_default_preprocess(preset, channels, model.img_size())) {
    pre = *d;
    r.source = "timm's defaults for " + preset + "; the checkpoint stores none";
  } else {
    pre = data::preprocess_of({}, channels, model.img_size(), {});
    r.source = "moejet's defaults; the checkpoint stores none";
  }
  auto per_channel = [&](const std::vector<double>& v, const char* what) {
    check<ConfigError>(v.size() == 1 || static_cast<int64_t>(v.size()) == channels,
                       "eval --{}: give 1 or {} values, got {}", what, channels, v.size());
    return v.size() == 1 ? std::vector<double>(static_cast<size_t>(channels), v[0]) : v;
  };
  if (!overrides.mean.empty())
    pre.mean = per_channel(overrides.mean, "mean");
  if (!overrides.std.empty())
    pre.std = per_channel(overrides.std, "std");
  if (overrides.crop_pct > 0)
    pre.crop_pct = overrides.crop_pct;
  if (!overrides.interpolation.empty())
    pre.interpolation = overrides.interpolation;
  if (overrides.any())
    r.source += ", with flags";
  check<ConfigError>(pre.input_size.size() == 3 && pre.input_size[0] == channels,
                     "{}: its preprocessing is for {}-channel input, the model takes {}", checkpoint,
                     pre.input_size.empty() ? 0 : pre.input_size[0], channels);
  pre.input_size = {channels, model.img_size(), model.img_size()};
  return r;
}

data::DataConfig stored_data_config(const io::Metadata& metadata, const std::string& checkpoint) {
  auto it = metadata.find(models::kDataKey);
  check<ConfigError>(it != metadata.end(), "{}: the checkpoint does not say which data it was trained on; pass --data",
                     checkpoint);
  data::DataConfig dc;
  read_config(parse_json(it->second, checkpoint), dc, "data");
  dc.validate();
  return dc;
}

EvalData open_eval_data(const io::Metadata& metadata, const std::string& checkpoint, const DataOverrides& o,
                        const models::ModelConfig& model, const data::Preprocess& preprocess) {
  EvalData d;
  auto& dc = d.config;
  if (!o.dataset.empty()) {
    dc.dataset = o.dataset;
  } else {
    dc = stored_data_config(metadata, checkpoint);
    spdlog::info("data: {} (the checkpoint's training data)", dc.dataset);
  }
  d.split = o.split.empty() ? dc.eval_split : o.split;
  if (!o.classes.empty())
    dc.classes = o.classes;
  if (!o.range.empty()) {
    dc.train_split = d.split;
    dc.train_range = o.range;
    dc.val_split = 0;
  }
  if (o.max_image_pixels >= 0)
    dc.max_image_pixels = o.max_image_pixels;
  d.dataset = data::open_split(dc, d.split, o.limit, data::kEvalSubsetSeed);
  const auto& ds = d.dataset;
  check<ConfigError>(ds->num_classes() == model.num_classes(), "{} has {} classes but the model has {} outputs",
                     ds->describe(), ds->num_classes(), model.num_classes());
  const auto names = ds->class_names();
  const auto& labels = preprocess.label_names;
  check<ConfigError>(labels.empty() || names.empty() || labels == names,
                     "{}: the model's classes ({}) are not those of {} ({}); evaluate on the data it was trained on",
                     checkpoint, fmt::join(labels, ", "), ds->describe(), fmt::join(names, ", "));
  return d;
}

std::optional<data::SuperClasses> resolve_superclasses(const io::Metadata& metadata, const std::string& checkpoint,
                                                       const std::string& file, int64_t num_classes,
                                                       int64_t num_experts) {
  std::optional<data::SuperClasses> sc;
  if (!file.empty()) {
    sc = data::read_superclasses(file, num_classes);
  } else if (auto it = metadata.find(models::kSuperclassesKey); it != metadata.end()) {
    sc = data::superclasses_from_json(parse_json(it->second, checkpoint), checkpoint);
    sc->validate(checkpoint, num_classes);
  }
  if (sc) {
    check<ConfigError>(sc->num_superclasses == num_experts, "{} super-classes for a router over {} experts",
                       sc->num_superclasses, num_experts);
  }
  return sc;
}

}  // namespace moejet::eval
