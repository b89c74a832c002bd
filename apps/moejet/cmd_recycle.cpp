#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/system.h"
#include "moejet/recycle/recycle_job.h"
#include "moejet/train/train_config.h"

namespace moejet::cli {

namespace {

// Flags bind to the job's own fields where they are one; the rest are resolved in the runner.
struct RecycleArgs {
  recycle::RecycleJob job;
  std::string dense_model, model, method = "importance", data, fc2_scale = "none", device = "cpu";
  std::vector<std::string> sets, group_sources, source_models, stats_sets;
  bool quiet = false;
};

}  // namespace

Runner add_recycle_command(CLI::App& app) {
  auto a = std::make_shared<RecycleArgs>();
  auto* sub = app.add_subcommand(
      "recycle", "build the initial weights of an MoE model from dense checkpoints (checkpoint recycling)");
  sub->add_option("--dense", a->job.dense.path, "dense checkpoint (moejet or timm safetensors / .pth), equal or wider")
      ->required();
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
  sub->add_option("--split", a->job.stats.split)->capture_default_str();
  sub->add_option("--images", a->job.stats.images,
                  "images to gather statistics on: a class-stratified sample of the data (the authors: 38400)")
      ->capture_default_str();
  sub->add_option("--batch-size", a->job.stats.batch_size)->capture_default_str();
  sub->add_option("--score", a->job.options.score,
                  "importance score: l2 (Euclidean norm of a unit's activations, the authors'), l1 (mean |a|), "
                  "l2sq (mean a^2), freq")
      ->capture_default_str()
      ->check(CLI::IsMember({"l1", "l2", "l2sq", "freq"}));
  sub->add_flag("--topk", a->job.options.importance_topk, "importance: every expert takes the top units (no sampling)");
  sub->add_option("--fc2-scale", a->fc2_scale,
                  "none: experts keep the dense fc2 columns (the authors'); hidden: fc2 *= H/h, moejet's own "
                  "(each expert an unbiased estimate of the dense MLP)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "hidden"}));
  sub->add_option("--channels", a->job.options.channels,
                  "experts from a wider source: per-expert (each expert of each block its own stream channels, from "
                  "that block's norm2 statistics, the authors') or shared (the source's one channel set)")
      ->capture_default_str()
      ->check(CLI::IsMember({"per-expert", "shared"}));
  sub->add_option("--uniform", a->job.options.uniform,
                  "uniform grids: linspace (every expert round(linspace(0, H-1, h)), the authors') or shifted "
                  "(expert e's grid shifted by e, moejet's own: the first H/h experts disjoint)")
      ->capture_default_str()
      ->check(CLI::IsMember({"linspace", "shifted"}));
  sub->add_option("--graph", a->job.options.graph,
                  "graph selection: jetpack (unweighted METIS into 32 parts, each expert draws parts by their "
                  "co-activation, the authors') or balanced (weighted METIS, one part of H/h units per expert, "
                  "moejet's own)")
      ->capture_default_str()
      ->check(CLI::IsMember({"jetpack", "balanced"}));
  sub->add_option("--universal-units", a->job.options.universal_units,
                  "universal experts: reslice (draw a core expert's units, keep every H_core/h-th, the authors'), "
                  "draw (their own h units), auto (reslice from a wider source, else draw)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "draw", "reslice"}));
  sub->add_option("--firing-quantile", a->job.stats.firing_quantile,
                  "a unit fires (freq score, graph co-activation) when a > 0 (0, the authors') or above this "
                  "quantile of its layer's activations")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999999));
  sub->add_option("--stats-sample", a->job.stats.sample,
                  "which images: stratified (a seeded sample that covers every class) or first (the first "
                  "--images in data-set order, as the authors' generator; a class-sorted folder then covers "
                  "only its first classes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"stratified", "first"}));
  sub->add_option("--stats-set", a->stats_sets,
                  "override of the statistics' eval transform, e.g. --stats-set augment.mean=[0.5,0.5,0.5] "
                  "--stats-set augment.crop_pct=0.9 (a timm teacher's own preprocessing)");
  sub->add_option("--seed", a->job.options.seed)->capture_default_str();
  sub->add_option("--workers", a->job.stats.workers)->capture_default_str();
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("-o,--out", a->job.out, "output weights (.safetensors), for moejet train --init")->required();
  sub->add_option("--report", a->job.report, "JSON report (default: OUT stem + .recycle.json)");
  sub->add_flag("-q,--quiet", a->quiet, "no progress bar");
  return [a]() {
    auto& job = a->job;
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
    // The statistics' transform may differ from fine-tuning's (a teacher's own mean, std, crop).
    json stats_json = train::to_json(tc);
    apply_overrides(stats_json, a->stats_sets);
    job.stats.transform = train::train_config_from_json(stats_json).augment;
    job.stats.data = tc.data;
    job.stats.data_seed = tc.train.seed;
    job.model = json(tc.model);
    job.dense.model = a->dense_model.empty() ? json() : load_model_json(a->dense_model);
    job.options.method = recycle::parse_method(a->method);
    job.options.rescale = a->fc2_scale == "hidden";
    // "GROUP=VALUE" of --source and --source-model; the last --source-model of a group wins.
    auto split_group = [](const std::string& item, const std::string& option, const std::string& value) {
      auto eq = item.find('=');
      check<ConfigError>(eq != std::string::npos && eq > 0, "{} '{}': expected GROUP={}", option, item, value);
      return std::make_pair(item.substr(0, eq), item.substr(eq + 1));
    };
    for (const auto& item : a->group_sources) {
      const auto [group, path] = split_group(item, "--source", "CHECKPOINT");
      check<ConfigError>(!job.groups.count(group), "--source: group '{}' given twice", group);
      job.groups[group].path = path;
    }
    for (const auto& item : a->source_models) {
      const auto [group, model] = split_group(item, "--source-model", "MODEL");
      check<ConfigError>(job.groups.count(group), "--source-model {}=...: no --source {}=CHECKPOINT given", group,
                         group);
      job.groups[group].model = load_model_json(model);
    }
    job.device = parse_device(a->device);
    TerminalProgress bar;
    job.progress = a->quiet ? nullptr : &bar;
    recycle::run_recycle_job(job);
    return 0;
  };
}

}  // namespace moejet::cli
