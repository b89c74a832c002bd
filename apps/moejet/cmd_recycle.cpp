#include <spdlog/spdlog.h>

#include <filesystem>

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
  std::vector<std::string> sets;
  std::string score = "l1", device = "cpu";
  int64_t images = 2048, batch = 128;
  bool topk = false, no_rescale = false, quiet = false;
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
      "recycle", "build the initial weights of an MoE ViT from a dense checkpoint (checkpoint recycling)");
  sub->add_option("--dense", a->dense, "dense checkpoint (moejet or timm safetensors / .pth)")->required();
  sub->add_option("--dense-model", a->dense_model,
                  "dense model config (preset or JSON) when the checkpoint does not carry one; "
                  "default: the MoE model without MoE blocks");
  sub->add_option("-m,--model", a->model, "MoE model: preset, model JSON or training config")->required();
  sub->add_option("--set", a->sets, "override of the MoE model config, e.g. --set moe.core_experts=4");
  sub->add_option("--method", a->method, "copy, random, uniform, graph or importance")
      ->capture_default_str()
      ->check(CLI::IsMember({"copy", "random", "uniform", "graph", "importance"}));
  sub->add_option("--data", a->data,
                  "data set for the activation statistics (default: the training config's, else "
                  "fashion-mnist)");
  sub->add_option("--split", a->split)->capture_default_str();
  sub->add_option("--images", a->images, "images to gather statistics on")->capture_default_str();
  sub->add_option("--batch-size", a->batch)->capture_default_str();
  sub->add_option("--score", a->score, "importance score: l1 (mean |a|), l2 (mean a^2), freq")
      ->capture_default_str()
      ->check(CLI::IsMember({"l1", "l2", "freq"}));
  sub->add_flag("--topk", a->topk, "importance: every expert takes the top units (no sampling)");
  sub->add_flag("--no-rescale", a->no_rescale, "keep fc2 unscaled (experts are partial sums of the MLP)");
  sub->add_option("--seed", a->seed)->capture_default_str();
  sub->add_option("--workers", a->workers)->capture_default_str();
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("-o,--out", a->out, "output weights (.safetensors), for moejet train --init")->required();
  sub->add_option("--report", a->report, "JSON report (default: OUT stem + .recycle.json)");
  sub->add_flag("-q,--quiet", a->quiet, "no progress bar");
  return [a]() {
    auto device = parse_device(a->device);
    // The MoE model, and the data/augment sections when --model is a training config.
    json spec = file_exists(a->model) ? read_json_file(a->model) : json::object();
    json model_json = load_model_json(a->model);
    apply_overrides(model_json, a->sets);
    json tc_json = spec.contains("model") ? spec : json::object();
    tc_json["model"] = model_json;
    auto tc = train::train_config_from_json(tc_json);
    if (!a->data.empty()) {
      tc.data.dataset = a->data;
    }
    const auto& moe_cfg = tc.model;
    check<ConfigError>(moe_cfg.moe().enabled(), "{}: the model has no MoE blocks (model.moe.type is none)", a->model);

    // The dense model: its own config from the checkpoint, or the one named, or the MoE model
    // without MoE.
    io::Metadata meta;
    auto dense_state = io::read_checkpoint(a->dense, &meta);
    json dense_json = train::model_config_from_metadata(meta);
    if (!a->dense_model.empty()) {
      dense_json = load_model_json(a->dense_model);
    } else if (dense_json.is_null()) {
      dense_json = model_json;
      dense_json.erase("moe");
    }
    auto dense_cfg = models::model_config_from_json(dense_json, "dense model");
    check<ConfigError>(!dense_cfg.moe().enabled(), "{}: the dense checkpoint is already an MoE model", a->dense);
    auto dense = models::make_model(dense_cfg);
    spdlog::info("dense {}: {}", a->dense, train::load_model_weights(*dense, std::move(dense_state), a->dense, false));
    dense->to(device);

    recycle::RecycleOptions ro;
    ro.method = recycle::parse_method(a->method);
    ro.score = a->score;
    ro.importance_topk = a->topk;
    ro.rescale = !a->no_rescale;
    ro.seed = a->seed;

    std::map<int64_t, recycle::UnitStats> stats;
    if (recycle::needs_stats(ro.method)) {
      // The fine-tuning images themselves (range and limit of the training config apply).
      auto ds = train::open_split(tc.data, a->split, a->split == tc.data.train_split ? tc.data.train_limit : 0,
                                  tc.train.seed);
      spdlog::info("statistics: {} images of {}", std::min<int64_t>(a->images, ds->size()), ds->describe());
      recycle::StatsOptions so;
      so.images = a->images;
      so.batch_size = a->batch;
      so.coactivation = ro.method == recycle::Method::Graph;
      so.num_workers = a->workers;
      so.seed = a->seed;
      so.show_progress = !a->quiet;
      stats = recycle::collect_unit_stats(*dense, moe_cfg.moe().block_indices(dense->num_blocks()), ds,
                                          data::make_eval_transform(tc.augment, ds->channels()), so, device);
    }
    dense->to(torch::kCPU);
    torch::manual_seed(static_cast<int64_t>(a->seed));
    auto moe = models::make_model(moe_cfg);
    auto report = recycle::recycle_model(*dense, *moe, stats, ro);
    report["dense"] = a->dense;
    report["model"] = moe_cfg;
    report["statistics"] = {{"data", tc.data.dataset}, {"split", a->split},
                            {"images", recycle::needs_stats(ro.method) ? a->images : 0}};
    json cfg_json = moe_cfg;
    if (auto dir = std::filesystem::path(a->out).parent_path(); !dir.empty()) {
      std::filesystem::create_directories(dir);
    }
    train::save_model_checkpoint(a->out, *moe, cfg_json, train::TrainState{});
    const std::string report_path = a->report.empty() ? default_report_path(a->out) : a->report;
    write_json_file(report_path, report);
    spdlog::info("recycled ({}) {:.2f} M-parameter MoE -> {} (report {})", a->method,
                 models::count_parameters(*moe) / 1e6, a->out, report_path);
    return 0;
  };
}

}  // namespace moejet::cli
