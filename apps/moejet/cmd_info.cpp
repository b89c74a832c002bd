#include <spdlog/spdlog.h>

#include <functional>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit.h"
#include "moejet/train/checkpoint.h"

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
  sub->add_option("--checkpoint", a->checkpoint, "read the model config from a moejet checkpoint")
      ->check(CLI::ExistingFile);
  sub->add_option("--set", a->sets, "override a model config value, e.g. --set num_classes=10");
  sub->add_flag("--layers", a->layers, "print FLOPs per layer");
  sub->add_flag("--json", a->json_out, "print one JSON object instead of a table");
  return [a]() {
    json mj;
    if (!a->checkpoint.empty()) {
      io::Metadata meta;
      io::read_checkpoint(a->checkpoint, &meta);
      mj = train::model_config_from_metadata(meta);
      check<ConfigError>(!mj.is_null(), "{}: no moejet model config in this checkpoint; use --model",
                         a->checkpoint);
    } else {
      check<ConfigError>(!a->model.empty(), "info: give --model or --checkpoint");
      mj = load_model_json(a->model);
    }
    apply_overrides(mj, a->sets);
    if (mj.value("arch", "vit") == "convnext") {
      auto cfg = models::convnext_config_from_json(mj);
      models::ConvNext model(cfg);
      return print_counts(cfg, model->macs_by_layer(), models::count_parameters(*model), *a, [&] {
        fmt::print("model      ConvNeXt depths={} dims={} img={} classes={}\n", fmt::join(cfg.depths, ","),
                   fmt::join(cfg.dims, ","), cfg.img_size, cfg.num_classes);
      });
    }
    auto cfg = models::vit_config_from_json(mj);
    models::VisionTransformer model(cfg);
    return print_counts(cfg, model->macs_by_layer(), models::count_parameters(*model), *a, [&] {
      fmt::print("model      ViT d={} depth={} heads={} patch={} img={} classes={}\n", cfg.embed_dim,
                 cfg.depth, cfg.num_heads, cfg.patch_size, cfg.img_size, cfg.num_classes);
      fmt::print("tokens     {} ({} patches + {} prefix)\n", cfg.num_patches() + cfg.num_prefix_tokens(),
                 cfg.num_patches(), cfg.num_prefix_tokens());
      if (cfg.moe.enabled()) {
        const auto& m = cfg.moe;
        auto blocks = m.block_indices(cfg.depth);
        std::string experts =
            m.type == "sphero"
                ? fmt::format("{} core (hidden {}) + {} universal (hidden {}) experts, {} slot(s) each",
                              m.core_experts, moe::expert_hidden(cfg.embed_dim, m.core_mlp_ratio),
                              m.universal_experts, moe::expert_hidden(cfg.embed_dim, m.universal_mlp_ratio),
                              m.slots_per_expert)
                : fmt::format("{} experts (hidden {}){}", m.num_experts,
                              moe::expert_hidden(cfg.embed_dim, m.mlp_ratio),
                              m.type == "topk" ? fmt::format(", top-{}", m.top_k) : "");
        fmt::print("moe        {} in blocks {} (0-based): {}\n", m.type, fmt::join(blocks, ","), experts);
      }
    });
  };
}

}  // namespace moejet::cli
