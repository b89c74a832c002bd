#include <limits>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <optional>

#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/data/loader.h"
#include "moejet/data/preprocess.h"
#include "moejet/data/superclasses.h"
#include "moejet/eval/evaluate.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/model_config.h"
#include "moejet/train/checkpoint.h"
#include "moejet/train/trainer.h"

namespace moejet::cli {

namespace {

struct EvalArgs {
  std::string checkpoint, model, data, split, out, device = "cpu", superclasses, interpolation;
  std::vector<int64_t> classes, range;
  std::vector<std::string> sets;
  std::vector<double> mean, std;
  int64_t batch_size = 256, limit = 0;
  int64_t max_image_pixels = -1;  // -1: the training config's data.max_image_pixels
  int workers = 2;
  double crop_pct = 0.0;
  bool quiet = false;
};

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand("eval", "evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix");
  sub->add_option("checkpoint", a->checkpoint, "model weights (.safetensors or torch .pth)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-m,--model", a->model,
                  "model preset or JSON (needed when the checkpoint carries no moejet config)");
  sub->add_option("--set", a->sets, "override a model config value, e.g. --set num_classes=10");
  sub->add_option("--data", a->data, "data set spec (default: the one the checkpoint was trained on)");
  sub->add_option("--split", a->split, "split to evaluate (default: the training config's eval split, else test)");
  sub->add_option("--classes", a->classes, "evaluate only these classes (relabelled in order)");
  sub->add_option("--limit", a->limit, "at most this many images (class-stratified)");
  sub->add_option("--max-image-pixels", a->max_image_pixels,
                  "refuse image files larger than this many pixels (default: as in training, else PIL's "
                  "89478485; 0 = no limit)")
      ->check(CLI::Range(int64_t{0}, std::numeric_limits<int64_t>::max()));
  sub->add_option("--range", a->range, "only images START..END-1 of the split (as data.train_range)")
      ->expected(2);
  sub->add_option("--batch-size", a->batch_size)->capture_default_str();
  sub->add_option("--workers", a->workers)->capture_default_str();
  sub->add_option("--crop-pct", a->crop_pct,
                  "eval resize = img_size / crop_pct, then centre crop (default: the checkpoint's)")
      ->check(CLI::Range(0.01, 1.0));
  sub->add_option("--mean", a->mean, "normalisation mean, per channel (default: the checkpoint's)");
  sub->add_option("--std", a->std, "normalisation std, per channel (default: the checkpoint's)");
  sub->add_option("--interpolation", a->interpolation, "resize interpolation (default: the checkpoint's)")
      ->check(CLI::IsMember({"bilinear", "bicubic", "nearest"}));
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("--superclasses", a->superclasses,
                  "Mobile V-MoE: super-class file for router accuracy (default: the one stored in "
                  "the checkpoint by training)");
  sub->add_option("-o,--out", a->out, "write eval.json and confusion.csv into this directory");
  sub->add_flag("-q,--quiet", a->quiet, "no progress bar");
  return [a]() {
    auto device = parse_device(a->device);
    io::Metadata meta;
    auto state = io::read_checkpoint(a->checkpoint, &meta);
    json model_json = a->model.empty() ? train::model_config_from_metadata(meta) : load_model_json(a->model);
    check<ConfigError>(!model_json.is_null(),
                       "{}: no moejet model config in the checkpoint; pass --model PRESET_OR_JSON",
                       a->checkpoint);
    apply_overrides(model_json, a->sets);
    auto cfg = models::model_config_from_json(model_json);
    auto model = models::make_model(cfg);
    spdlog::info("load {}: {}", a->checkpoint, train::load_model_weights(*model, std::move(state), a->checkpoint, false));
    model->to(device);
    model->eval();

    // Preprocessing: the checkpoint's own, else timm's defaults for a preset, else moejet's; flags
    // override any of it. The log says which values are in force and where they came from.
    data::Preprocess pre;
    std::string pre_source;
    const std::string preset = a->model.empty() || file_exists(a->model) ? model_json.value("preset", std::string())
                                                                          : a->model;
    if (auto it = meta.find(train::kPretrainedCfgKey); it != meta.end()) {
      pre = data::preprocess_from_pretrained_cfg(parse_json(it->second, a->checkpoint), a->checkpoint);
      pre_source = "stored in the checkpoint";
    } else if (auto d = data::timm_default_preprocess(preset, cfg.in_chans(), cfg.img_size())) {
      pre = *d;
      pre_source = "timm's defaults for " + preset + "; the checkpoint stores none";
    } else {
      pre = data::preprocess_of({}, cfg.in_chans(), cfg.img_size(), {});
      pre_source = "moejet's defaults; the checkpoint stores none";
    }
    auto per_channel = [&](const std::vector<double>& v, const char* what) {
      check<ConfigError>(v.size() == 1 || static_cast<int64_t>(v.size()) == cfg.in_chans(),
                         "eval --{}: give 1 or {} values, got {}", what, cfg.in_chans(), v.size());
      return v.size() == 1 ? std::vector<double>(static_cast<size_t>(cfg.in_chans()), v[0]) : v;
    };
    const bool flags = !a->mean.empty() || !a->std.empty() || a->crop_pct > 0 || !a->interpolation.empty();
    if (!a->mean.empty()) pre.mean = per_channel(a->mean, "mean");
    if (!a->std.empty()) pre.std = per_channel(a->std, "std");
    if (a->crop_pct > 0) pre.crop_pct = a->crop_pct;
    if (!a->interpolation.empty()) pre.interpolation = a->interpolation;
    check<ConfigError>(pre.input_size.size() == 3 && pre.input_size[0] == cfg.in_chans(),
                       "{}: its preprocessing is for {}-channel input, the model takes {}", a->checkpoint,
                       pre.input_size.empty() ? 0 : pre.input_size[0], cfg.in_chans());
    pre.input_size = {cfg.in_chans(), cfg.img_size(), cfg.img_size()};
    spdlog::info("preprocessing ({}{}): {}", pre_source, flags ? ", with flags" : "", data::describe(pre));

    // The data: --data, else the training config's data section stored with the weights.
    train::DataConfig dc;
    if (!a->data.empty()) {
      dc.dataset = a->data;
    } else if (auto it = meta.find(train::kDataKey); it != meta.end()) {
      dc = train::train_config_from_json(json{{"data", parse_json(it->second, a->checkpoint)}, {"model", model_json}}).data;
      spdlog::info("data: {} (the checkpoint's training data)", dc.dataset);
    } else {
      throw ConfigError(fmt::format("{}: the checkpoint does not say which data it was trained on; pass --data",
                                    a->checkpoint));
    }
    const std::string split = a->split.empty() ? dc.eval_split : a->split;
    if (!a->classes.empty()) dc.classes = a->classes;
    if (!a->range.empty()) {
      dc.train_split = split;
      dc.train_range = a->range;
      dc.val_split = 0;
    }
    if (a->max_image_pixels >= 0) dc.max_image_pixels = a->max_image_pixels;
    auto ds = train::open_split(dc, split, a->limit, 0);
    check<ConfigError>(ds->num_classes() == cfg.num_classes(),
                       "{} has {} classes but the model has {} outputs", ds->describe(),
                       ds->num_classes(), cfg.num_classes());
    const auto data_names = ds->class_names();
    check<ConfigError>(pre.label_names.empty() || data_names.empty() || pre.label_names == data_names,
                       "{}: the model's classes ({}) are not those of {} ({}); evaluate on the data it was trained on",
                       a->checkpoint, fmt::join(pre.label_names, ", "), ds->describe(), fmt::join(data_names, ", "));
    const data::AugmentConfig aug = data::eval_augment(pre);
    data::LoaderOptions lo;
    lo.batch_size = a->batch_size;
    lo.shuffle = false;
    lo.drop_last = false;
    lo.num_workers = a->workers;
    data::Loader loader(ds, data::make_eval_transform(aug, ds->channels()), lo);
    eval::RouterFn router;
    torch::Tensor superclass_of;
    if (model->router) {
      std::optional<data::SuperClasses> sc;
      if (!a->superclasses.empty()) {
        sc = data::read_superclasses(a->superclasses, cfg.num_classes());
      } else if (auto it = meta.find(train::kSuperclassesKey); it != meta.end()) {
        sc = data::superclasses_from_json(json::parse(it->second), a->checkpoint);
        sc->validate(a->checkpoint, cfg.num_classes());
      }
      if (sc) {
        check<ConfigError>(sc->num_superclasses == cfg.moe().num_experts,
                           "{} super-classes for a router over {} experts", sc->num_superclasses,
                           cfg.moe().num_experts);
        superclass_of = torch::tensor(sc->superclass_of, torch::kLong);
        router = [&]() { return model->last_routing.logits; };
      }
    }
    auto r = eval::evaluate([&](const torch::Tensor& x) { return model->forward(x); }, loader,
                            cfg.num_classes(), device, !a->quiet, router, superclass_of);
    auto names = ds->class_names();
    auto acc = r.per_class_accuracy();
    fmt::print("{}: {} images, top1 {:.2f}%, top5 {:.2f}%, loss {:.4f}\n", ds->describe(), r.count,
               r.top1, r.top5, r.loss);
    if (r.router_top1 >= 0) {
      fmt::print("router ({}-way super-classes): top1 {:.2f}%\n", cfg.moe().num_experts, r.router_top1);
    }
    for (size_t c = 0; c < acc.size(); ++c) {
      fmt::print("  {:>3} {:<20} {:6.2f}%\n", c, c < names.size() ? names[c] : "", acc[c]);
    }
    if (!a->out.empty()) {
      json j = r.to_json(names);
      j["checkpoint"] = a->checkpoint;
      j["data"] = dc.dataset;
      j["split"] = split;
      j["preprocessing"] = data::to_pretrained_cfg(pre);
      write_json_file(a->out + "/eval.json", j);
      eval::write_confusion_csv(a->out + "/confusion.csv", r.confusion, names);
      spdlog::info("wrote {}/eval.json and {}/confusion.csv", a->out, a->out);
    }
    return 0;
  };
}

}  // namespace moejet::cli
