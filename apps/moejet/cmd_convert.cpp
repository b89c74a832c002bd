#include <spdlog/spdlog.h>

#include <filesystem>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/strings.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/checkpoint_layout.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

namespace {

struct ConvertArgs {
  std::string in, out, to = "jetpack", model;
  std::vector<std::string> sets;
};

}  // namespace

int convert_checkpoint(const std::string& in, const std::string& out, const std::string& to, const std::string& model,
                       const std::vector<std::string>& sets) {
  const bool torch_out = ends_with(out, ".pth") || ends_with(out, ".pt");
  check<ConfigError>(torch_out || ends_with(out, ".safetensors"),
                     "convert --out {}: expected a .safetensors, .pth or .pt file name", out);
  check<ConfigError>(!(torch_out && to == "moejet"),
                     "convert --to moejet: writes safetensors (the model config lives in its metadata); got {}", out);
  io::Metadata meta;
  auto state = io::read_checkpoint(in, &meta);
  json mj = model.empty() ? models::model_config_from_metadata(meta, in) : load_model_json(model);
  io::StateDict weights;
  if (!mj.is_null()) {
    // With a model config, the weights are checked by loading them into the model: every key
    // present and of the right shape, whatever layout the file was in.
    apply_overrides(mj, sets);
    auto net = models::make_model(models::model_config_from_json(mj));
    spdlog::info("load {}: {}", in, models::load_model_weights(*net, std::move(state), in, false));
    if (to == "moejet") {
      models::save_model(out, *net, mj);
      spdlog::info("wrote {} (moejet layout, model config stored)", out);
      return 0;
    }
    weights = io::module_state_dict(*net);
  } else {
    check<ConfigError>(to != "moejet",
                       "{}: no moejet model config in this checkpoint; --to moejet needs --model PRESET_OR_JSON", in);
    std::vector<std::string> notes;
    weights = models::to_moejet_layout(state, &notes);
    for (const auto& n : notes) {
      spdlog::info("{}: {}", in, n);
    }
    spdlog::warn("{}: no model config (--model), so the weights are renamed but not checked against a model", in);
  }
  // Only MoE keys are named differently in the authors' layout.
  auto jetpack = models::to_jetpack_layout(weights);
  const bool moe = jetpack.keys() != weights.keys();
  check<ConfigError>(!(to == "timm" && moe),
                     "{}: an MoE model has no timm layout (timm has no MoE layers); use --to jetpack", in);
  if (to == "jetpack") {
    weights = std::move(jetpack);
  }
  if (torch_out) {
    io::write_torch_checkpoint(out, weights);
  } else {
    io::write_safetensors(out, weights);
  }
  spdlog::info("wrote {} ({} tensors, {} layout{})", out, weights.size(), to,
               moe || to == "timm" ? "" : ": a dense model, so timm's keys");
  return 0;
}

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
  return [a]() { return convert_checkpoint(a->in, a->out, a->to, a->model, a->sets); };
}

}  // namespace moejet::cli
