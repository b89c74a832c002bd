#include <spdlog/spdlog.h>

#include <filesystem>
#include <numeric>

#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/model_config.h"
#include "moejet/recycle/recycle.h"
#include "moejet/train/checkpoint.h"
#include "moejet/train/train_config.h"
#include "moejet/train/trainer.h"

namespace moejet::cli {

namespace {

struct RecycleArgs {
  std::string dense, dense_model, model, method = "importance", data, split = "train", out, report;
  std::vector<std::string> sets, group_sources, source_models;
  std::string score = "l2", fc2_scale = "none", channels = "per-expert", device = "cpu";
  std::string uniform = "linspace", graph = "jetpack", universal_units = "auto", stats_sample = "stratified";
  std::vector<std::string> stats_sets;
  double firing_quantile = 0.0;
  int64_t images = 38400, batch = 128;
  bool topk = false, quiet = false;
  uint64_t seed = 0;
  int workers = 2;
};

// The report sits beside the weights: runs/x/init.safetensors -> runs/x/init.recycle.json.
std::string default_report_path(const std::string& out) {
  auto p = std::filesystem::path(out);
  return (p.parent_path() / (p.stem().string() + ".recycle.json")).string();
}

}  // namespace

Runner add_recycle_command(CLI::App& app) {
  auto a = std::make_shared<RecycleArgs>();
  auto* sub = app.add_subcommand(
      "recycle", "build the initial weights of an MoE model from dense checkpoints (checkpoint recycling)");
  sub->add_option("--dense", a->dense, "dense checkpoint (moejet or timm safetensors / .pth), equal or wider")->required();
  sub->add_option("--dense-model", a->dense_model,
                  "dense model config (preset or JSON) when the checkpoint does not carry one; "
                  "default: the MoE model without MoE blocks");
  sub->add_option("-m,--model", a->model, "MoE model: preset, model JSON or training config")->required();
  sub->add_option("--source", a->group_sources,
                  "GROUP=CHECKPOINT: take the experts of this group (core, universal, experts) from "
                  "another dense checkpoint, of equal or larger width (channels are then selected)");
  sub->add_option("--source-model", a->source_models,
                  "GROUP=MODEL: the architecture of a --source checkpoint that carries no moejet config "
                  "(preset such as vit_small_patch16_224, or JSON)");
  sub->add_option("--set", a->sets, "override of the MoE model config, e.g. --set moe.core_experts=4");
  sub->add_option("--method", a->method, "copy, random, uniform, graph or importance")
      ->capture_default_str()
      ->check(CLI::IsMember({"copy", "random", "uniform", "graph", "importance"}));
  sub->add_option("--data", a->data,
                  "data set for the activation statistics (default: the training config's, else "
                  "fashion-mnist)");
  sub->add_option("--split", a->split)->capture_default_str();
  sub->add_option("--images", a->images,
                  "images to gather statistics on: a class-stratified sample of the data (the authors: 38400)")
      ->capture_default_str();
  sub->add_option("--batch-size", a->batch)->capture_default_str();
  sub->add_option("--score", a->score,
                  "importance score: l2 (Euclidean norm of a unit's activations, the authors'), l1 (mean |a|), "
                  "l2sq (mean a^2), freq")
      ->capture_default_str()
      ->check(CLI::IsMember({"l1", "l2", "l2sq", "freq"}));
  sub->add_flag("--topk", a->topk, "importance: every expert takes the top units (no sampling)");
  sub->add_option("--fc2-scale", a->fc2_scale,
                  "none: experts keep the dense fc2 columns (the authors'); hidden: fc2 *= H/h, moejet's own "
                  "(each expert an unbiased estimate of the dense MLP)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "hidden"}));
  sub->add_option("--channels", a->channels,
                  "experts from a wider source: per-expert (each expert of each block its own stream channels, from "
                  "that block's norm2 statistics, the authors') or shared (the source's one channel set)")
      ->capture_default_str()
      ->check(CLI::IsMember({"per-expert", "shared"}));
  sub->add_option("--uniform", a->uniform,
                  "uniform grids: linspace (every expert round(linspace(0, H-1, h)), the authors') or shifted "
                  "(expert e's grid shifted by e, moejet's own: the first H/h experts disjoint)")
      ->capture_default_str()
      ->check(CLI::IsMember({"linspace", "shifted"}));
  sub->add_option("--graph", a->graph,
                  "graph selection: jetpack (unweighted METIS into 32 parts, each expert draws parts by their "
                  "co-activation, the authors') or balanced (weighted METIS, one part of H/h units per expert, "
                  "moejet's own)")
      ->capture_default_str()
      ->check(CLI::IsMember({"jetpack", "balanced"}));
  sub->add_option("--universal-units", a->universal_units,
                  "universal experts: reslice (draw a core expert's units, keep every H_core/h-th, the authors'), "
                  "draw (their own h units), auto (reslice from a wider source, else draw)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "draw", "reslice"}));
  sub->add_option("--firing-quantile", a->firing_quantile,
                  "a unit fires (freq score, graph co-activation) when a > 0 (0, the authors') or above this "
                  "quantile of its layer's activations")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999999));
  sub->add_option("--stats-sample", a->stats_sample,
                  "which images: stratified (a seeded sample that covers every class) or first (the first "
                  "--images in data-set order, as the authors' generator; a class-sorted folder then covers "
                  "only its first classes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"stratified", "first"}));
  sub->add_option("--stats-set", a->stats_sets,
                  "override of the statistics' eval transform, e.g. --stats-set augment.mean=[0.5,0.5,0.5] "
                  "--stats-set augment.crop_pct=0.9 (a timm teacher's own preprocessing)");
  sub->add_option("--seed", a->seed)->capture_default_str();
  sub->add_option("--workers", a->workers)->capture_default_str();
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("-o,--out", a->out, "output weights (.safetensors), for moejet train --init")->required();
  sub->add_option("--report", a->report, "JSON report (default: OUT stem + .recycle.json)");
  sub->add_flag("-q,--quiet", a->quiet, "no progress bar");
  return [a]() {
    auto device = parse_device(a->device);
    // The MoE model, and the data/augment sections when --model is a training config.
    json spec = names_a_file(a->model) ? read_json_file(resolve_config_path(a->model)) : json::object();
    json model_json = load_model_json(a->model);
    apply_overrides(model_json, a->sets);
    json tc_json = spec.contains("model") ? spec : json::object();
    tc_json["model"] = model_json;
    auto tc = train::train_config_from_json(tc_json);
    if (!a->data.empty()) {
      tc.data.dataset = a->data;
    }
    if (tc.augment.image_size == 0) {  // as training does: the data at the model's input size
      tc.augment.image_size = tc.model.img_size();
    }
    const auto& moe_cfg = tc.model;
    // The statistics' transform may differ from fine-tuning's (a teacher's own mean, std, crop).
    json stats_json = train::to_json(tc);
    apply_overrides(stats_json, a->stats_sets);
    const auto stats_augment = train::train_config_from_json(stats_json).augment;

    torch::manual_seed(static_cast<int64_t>(a->seed));
    auto moe = models::make_model(moe_cfg);

    recycle::RecycleOptions ro;
    ro.method = recycle::parse_method(a->method);
    ro.score = a->score;
    ro.importance_topk = a->topk;
    ro.rescale = a->fc2_scale == "hidden";
    ro.channels = a->channels;
    ro.uniform = a->uniform;
    ro.graph = a->graph;
    ro.universal_units = a->universal_units;
    ro.seed = a->seed;

    // The statistics data: the fine-tuning images themselves (range and limit of the training
    // config apply), at most --images of them in a class-stratified sample, so that every class
    // is seen (or the first --images); opened once for all sources.
    data::DatasetPtr stats_data;
    if (recycle::needs_stats(ro.method)) {
      check<ConfigError>(a->images > 0, "recycle --images: must be > 0, got {}", a->images);
      stats_data = train::open_split(tc.data, a->split,
                                     a->split == tc.data.train_split ? tc.data.train_limit : 0, tc.train.seed);
      if (a->stats_sample == "first") {
        const auto n = std::min<size_t>(static_cast<size_t>(a->images), stats_data->size());
        std::vector<size_t> idx(n);
        std::iota(idx.begin(), idx.end(), size_t{0});
        stats_data = data::subset(stats_data, std::move(idx),
                                  fmt::format("{} (its first {} images)", stats_data->describe(), n));
      } else {
        stats_data = train::stratified_subset(stats_data, a->images, a->seed);
      }
      spdlog::info("statistics: {} images of {}", stats_data->size(), stats_data->describe());
    }
    const auto moe_blocks = moe_cfg.moe().block_indices(moe->num_blocks());

    // A source's model: its own config from the checkpoint, or the one named, or (dense source
    // only) the MoE model without MoE. ViT sources run at the target's input size, their
    // position embedding resampled as for fine-tuning.
    std::vector<models::ModelPtr> models_held;
    io::Metadata dense_meta;
    auto load_source = [&](const std::string& role, const std::string& path, const std::string& model_spec) {
      io::Metadata meta;
      auto state = io::read_checkpoint(path, &meta);
      if (role == "dense") dense_meta = meta;
      json mj = train::model_config_from_metadata(meta);
      if (!model_spec.empty()) {
        mj = load_model_json(model_spec);
      } else if (mj.is_null()) {
        check<ConfigError>(role == "dense",
                           "{}: no moejet model config in this checkpoint; name its architecture with "
                           "--source-model {}=PRESET_OR_JSON",
                           path, role);
        mj = model_json;
        mj.erase("moe");
      }
      auto cfg = models::model_config_from_json(mj, role + " source model");
      check<ConfigError>(!cfg.moe().enabled(), "{}: the {} source is already an MoE model", path, role);
      if (cfg.is_vit() && moe_cfg.is_vit()) {
        cfg.vit.img_size = moe_cfg.vit.img_size;
      }
      auto model = models::make_model(cfg);
      spdlog::info("{} source {}: {}", role, path, train::load_model_weights(*model, std::move(state), path, false));
      recycle::RecycleSource src;
      src.name = path;
      src.model = model.get();
      if (stats_data) {
        const bool wider = recycle::is_wider(*model, *moe);
        // A wider dense source also narrows the dense MLPs of every block, so all need statistics.
        std::vector<int64_t> blocks = moe_blocks;
        if (wider && role == "dense") {
          blocks.clear();
          for (int64_t b = 0; b < model->num_blocks(); ++b) blocks.push_back(b);
        }
        recycle::StatsOptions so;
        so.images = static_cast<int64_t>(stats_data->size());
        so.batch_size = a->batch;
        so.coactivation = ro.method == recycle::Method::Graph;
        so.quantile = a->firing_quantile;
        so.num_workers = a->workers;
        so.seed = a->seed;
        so.show_progress = !a->quiet;
        model->to(device);
        src.stats = recycle::collect_model_stats(*model, blocks, stats_data,
                                                 data::make_eval_transform(stats_augment, stats_data->channels()), so,
                                                 device, wider);
        model->to(torch::kCPU);
      }
      models_held.push_back(model);
      return src;
    };
    recycle::RecycleSources sources;
    sources.dense = load_source("dense", a->dense, a->dense_model);
    // "GROUP=VALUE" of --source and --source-model.
    auto split_group = [](const std::string& item, const std::string& option, const std::string& value) {
      auto eq = item.find('=');
      check<ConfigError>(eq != std::string::npos && eq > 0, "{} '{}': expected GROUP={}", option, item, value);
      return std::make_pair(item.substr(0, eq), item.substr(eq + 1));
    };
    std::map<std::string, std::string> source_models;
    for (const auto& item : a->source_models) {
      auto [group, model] = split_group(item, "--source-model", "MODEL");
      source_models[group] = model;  // the last one given wins, as for --set
    }
    for (const auto& item : a->group_sources) {
      const auto [group, path] = split_group(item, "--source", "CHECKPOINT");
      check<ConfigError>(file_exists(path), "--source {}: no such file '{}'", group, path);
      check<ConfigError>(!sources.groups.count(group), "--source: group '{}' given twice", group);
      sources.groups[group] = load_source(group, path, source_models.count(group) ? source_models.at(group) : "");
    }
    for (const auto& [group, spec] : source_models) {
      check<ConfigError>(sources.groups.count(group), "--source-model {}=...: no --source {}=CHECKPOINT given", group,
                         group);
    }

    auto report = recycle::recycle_model(sources, *moe, ro);
    report["dense"] = a->dense;
    report["model"] = moe_cfg;
    report["statistics"] = {{"data", tc.data.dataset},
                            {"split", a->split},
                            {"images", stats_data ? static_cast<int64_t>(stats_data->size()) : 0},
                            {"sample", a->stats_sample},
                            {"firing_quantile", a->firing_quantile},
                            {"transform", stats_json["augment"]},
                            {"score", a->score},
                            {"fc2_scale", a->fc2_scale}};
    json cfg_json = moe_cfg;
    if (auto dir = std::filesystem::path(a->out).parent_path(); !dir.empty()) {
      std::filesystem::create_directories(dir);
    }
    // The dense model's preprocessing and data travel on, so that `moejet eval` of the recycled
    // init (the step-0 point) needs no flags: at the MoE's input size, and with the class names
    // only when the head still has those classes.
    io::Metadata extra;
    if (auto it = dense_meta.find(train::kPretrainedCfgKey); it != dense_meta.end()) {
      json pre = parse_json(it->second, a->dense + " (" + train::kPretrainedCfgKey + ")");
      const auto& mc = moe_cfg;
      pre["input_size"] = {mc.in_chans(), mc.img_size(), mc.img_size()};
      if (pre.contains("label_names") && pre["label_names"].size() != static_cast<size_t>(mc.num_classes())) {
        pre.erase("label_names");
        pre.erase("num_classes");
      }
      extra[train::kPretrainedCfgKey] = pre.dump();
    }
    if (auto it = dense_meta.find(train::kDataKey); it != dense_meta.end()) {
      extra[train::kDataKey] = it->second;
    }
    train::save_model_checkpoint(a->out, *moe, cfg_json, train::TrainState{}, extra);
    const std::string report_path = a->report.empty() ? default_report_path(a->out) : a->report;
    write_json_file(report_path, report);
    spdlog::info("recycled ({}) {:.2f} M-parameter MoE -> {} (report {})", a->method,
                 models::count_parameters(*moe) / 1e6, a->out, report_path);
    return 0;
  };
}

}  // namespace moejet::cli
