#include <spdlog/spdlog.h>

#include <filesystem>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/checkpoint_layout.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

namespace {

struct ConvertArgs {
  std::string in, out, to = "jetpack", model;
  std::vector<std::string> sets;
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

Runner add_convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* sub = app.add_subcommand(
      "convert", "write a checkpoint in another key layout: the MoE Jetpack authors', plain timm, or moejet's");
  sub->add_option("checkpoint", a->in, "input: moejet, timm or the authors' layout (safetensors or torch.save)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--out", a->out,
                  "output file: .safetensors, or .pth / .pt for a torch.save archive (what torch.load and the "
                  "authors' mmengine load_from read)")
      ->required();
  sub->add_option("--to", a->to,
                  "jetpack: the authors' MoE key names (dense models: timm's); timm: a dense model's timm keys; "
                  "moejet: moejet's keys with the model config stored (safetensors only)")
      ->capture_default_str()
      ->check(CLI::IsMember({"jetpack", "timm", "moejet"}));
  sub->add_option("-m,--model", a->model,
                  "model preset or JSON, when the checkpoint carries no moejet model config (needed for --to "
                  "moejet)");
  sub->add_option("--set", a->sets, "override a model config value");
  return [a]() {
    const bool torch_out = ends_with(a->out, ".pth") || ends_with(a->out, ".pt");
    check<ConfigError>(torch_out || ends_with(a->out, ".safetensors"),
                       "convert --out {}: expected a .safetensors, .pth or .pt file name", a->out);
    check<ConfigError>(!(torch_out && a->to == "moejet"),
                       "convert --to moejet: writes safetensors (the model config lives in its metadata); got {}",
                       a->out);
    io::Metadata meta;
    auto state = io::read_checkpoint(a->in, &meta);
    json mj = a->model.empty() ? models::model_config_from_metadata(meta, a->in) : load_model_json(a->model);
    io::StateDict weights;
    if (!mj.is_null()) {
      // With a model config, the weights are checked by loading them into the model: every key
      // present and of the right shape, whatever layout the file was in.
      apply_overrides(mj, a->sets);
      auto model = models::make_model(models::model_config_from_json(mj));
      spdlog::info("load {}: {}", a->in, models::load_model_weights(*model, std::move(state), a->in, false));
      if (a->to == "moejet") {
        models::save_model(a->out, *model, mj);
        spdlog::info("wrote {} (moejet layout, model config stored)", a->out);
        return 0;
      }
      weights = io::module_state_dict(*model);
    } else {
      check<ConfigError>(a->to != "moejet",
                         "{}: no moejet model config in this checkpoint; --to moejet needs --model PRESET_OR_JSON",
                         a->in);
      std::vector<std::string> notes;
      weights = models::to_moejet_layout(state, &notes);
      for (const auto& n : notes) {
        spdlog::info("{}: {}", a->in, n);
      }
      spdlog::warn("{}: no model config (--model), so the weights are renamed but not checked against a model", a->in);
    }
    // Only MoE keys are named differently in the authors' layout.
    auto jetpack = models::to_jetpack_layout(weights);
    const bool moe = jetpack.keys() != weights.keys();
    check<ConfigError>(!(a->to == "timm" && moe),
                       "{}: an MoE model has no timm layout (timm has no MoE layers); use --to jetpack", a->in);
    if (a->to == "jetpack") {
      weights = std::move(jetpack);
    }
    if (torch_out) {
      io::write_torch_checkpoint(a->out, weights);
    } else {
      io::write_safetensors(a->out, weights);
    }
    spdlog::info("wrote {} ({} tensors, {} layout{})", a->out, weights.size(), a->to,
                 moe || a->to == "timm" ? "" : ": a dense model, so timm's keys");
    return 0;
  };
}

}  // namespace moejet::cli
