#include <spdlog/spdlog.h>

#include <functional>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

namespace {

struct InfoArgs {
  std::string model, checkpoint;
  std::vector<std::string> sets;
  bool json_out = false, layers = false;
};

using LayerMacs = std::vector<std::pair<std::string, double>>;

// The papers' columns for any architecture: one JSON object, or `describe`'s lines followed by
// Param (M), FLOPs (G) and, with --layers, FLOPs per layer.
int print_counts(const json& model, const LayerMacs& rows, int64_t params, const InfoArgs& a,
                 const std::function<void()>& describe) {
  double macs = 0;
  for (const auto& r : rows) {
    macs += r.second;
  }
  if (a.json_out) {
    json j = {{"model", model}, {"params", params}, {"flops", macs}};
    if (a.layers) {
      j["flops_by_layer"] = rows;
    }
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  describe();
  fmt::print("Param (M)  {:.2f}\n", params / 1e6);
  fmt::print("FLOPs (G)  {:.3f}   (multiply-accumulates per image, fvcore convention)\n", macs / 1e9);
  if (a.layers) {
    for (const auto& r : rows) {
      fmt::print("  {:<20} {:10.2f} M\n", r.first, r.second / 1e6);
    }
  }
  return 0;
}

}  // namespace

Runner add_info_command(CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  auto* sub = app.add_subcommand("info", "parameter and FLOP counts of a model (as the papers' tables)");
  sub->add_option("-m,--model", a->model, "preset name (e.g. vit_tiny_patch16_224) or config JSON");
  sub->add_option("--checkpoint", a->checkpoint,
                  "load this checkpoint (moejet, timm or the MoE Jetpack authors' layout; its model config from "
                  "the file, or from --model) and report how it loaded")
      ->check(CLI::ExistingFile);
  sub->add_option("--set", a->sets, "override a model config value, e.g. --set num_classes=10");
  sub->add_flag("--layers", a->layers, "print FLOPs per layer");
  sub->add_flag("--json", a->json_out, "print one JSON object instead of a table");
  return [a]() {
    const auto edit = [&](json& j) { apply_overrides(j, a->sets); };
    models::LoadedModel m;
    if (!a->checkpoint.empty()) {
      m = models::load_model(a->checkpoint, a->model.empty() ? json() : load_model_json(a->model), edit);
      spdlog::info("load {}: {}", a->checkpoint, m.load_summary);
    } else {
      check<ConfigError>(!a->model.empty(), "info: give --model or --checkpoint");
      m.config_json = load_model_json(a->model);
      edit(m.config_json);
      m.config = models::model_config_from_json(m.config_json);
      m.model = models::make_model(m.config);
    }
    const auto& cfg = m.config;
    auto model = m.model;
    return print_counts(cfg, model->macs_by_layer(), models::count_parameters(*model), *a, [&] {
      for (const auto& [label, text] : model->summary_lines()) {
        fmt::print("{:<10} {}\n", label, text);
      }
      const auto& m = cfg.moe();
      if (!m.enabled()) {
        return;
      }
      std::vector<std::string> where;
      for (auto b : m.block_indices(model->num_blocks())) {
        where.push_back(model->block_label(b));
      }
      fmt::print("moe        {} in blocks {} (0-based): {}\n", m.type(), fmt::join(where, ", "),
                 model->moe_layer_list.front().second->describe());
    });
  };
}

}  // namespace moejet::cli
