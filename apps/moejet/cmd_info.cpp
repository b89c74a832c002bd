#include <spdlog/spdlog.h>

#include <functional>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/model_config.h"
#include "moejet/train/checkpoint.h"
#include "moejet/train/trainer.h"

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
    json mj;
    io::StateDict state;
    if (!a->checkpoint.empty()) {
      io::Metadata meta;
      state = io::read_checkpoint(a->checkpoint, &meta);
      mj = a->model.empty() ? train::model_config_from_metadata(meta) : load_model_json(a->model);
      check<ConfigError>(!mj.is_null(), "{}: no moejet model config in this checkpoint; name it with --model",
                         a->checkpoint);
    } else {
      check<ConfigError>(!a->model.empty(), "info: give --model or --checkpoint");
      mj = load_model_json(a->model);
    }
    apply_overrides(mj, a->sets);
    auto cfg = models::model_config_from_json(mj);
    auto model = models::make_model(cfg);
    if (!a->checkpoint.empty()) {
      spdlog::info("load {}: {}", a->checkpoint,
                   train::load_model_weights(*model, std::move(state), a->checkpoint, false));
    }
    return print_counts(cfg, model->macs_by_layer(), models::count_parameters(*model), *a, [&] {
      if (cfg.is_vit()) {
        const auto& v = cfg.vit;
        fmt::print("model      ViT d={} depth={} heads={} patch={} img={} classes={}\n", v.embed_dim, v.depth,
                   v.num_heads, v.patch_size, v.img_size, v.num_classes);
        fmt::print("tokens     {} ({} patches + {} prefix)\n", v.num_patches() + v.num_prefix_tokens(),
                   v.num_patches(), v.num_prefix_tokens());
      } else {
        const auto& c = cfg.convnext;
        fmt::print("model      ConvNeXt depths={} dims={} img={} classes={}\n", fmt::join(c.depths, ","),
                   fmt::join(c.dims, ","), c.img_size, c.num_classes);
      }
      const auto& m = cfg.moe();
      if (!m.enabled()) {
        return;
      }
      auto blocks = m.block_indices(model->num_blocks());
      // Expert widths follow the block's token width (one width for ViT, the stage's for ConvNeXt).
      const int64_t dim = model->block_dim(blocks.front());
      std::string experts =
          m.type == "sphero"
              ? fmt::format("{} core (hidden {}) + {} universal (hidden {}) experts, {} slot(s) each",
                            m.core_experts, moe::expert_hidden(dim, m.core_mlp_ratio), m.universal_experts,
                            moe::expert_hidden(dim, m.universal_mlp_ratio), m.slots_per_expert)
              : fmt::format("{} experts (hidden {}){}", m.num_experts, moe::expert_hidden(dim, m.mlp_ratio),
                            m.type == "topk" || m.type == "image" ? fmt::format(", top-{}", m.top_k) : "");
      std::vector<std::string> where;
      for (auto b : blocks) {
        where.push_back(cfg.is_vit() ? std::to_string(b) : fmt::format("{} ({})", b, model->mlp_key(b)));
      }
      fmt::print("moe        {} in blocks {} (0-based): {}{}\n", m.type, fmt::join(where, ", "), experts,
                 cfg.is_vit() ? "" : fmt::format(" at width {}", dim));
    });
  };
}

}  // namespace moejet::cli
