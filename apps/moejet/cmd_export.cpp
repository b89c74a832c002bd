#include <spdlog/spdlog.h>

#include <sstream>

#include <torch/script.h>
#include <torch/torch.h>

#include "commands.h"
#include "inference_model.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/strings.h"
#include "moejet/core/system.h"
#include "moejet/eval/checkpoint_inputs.h"
#include "moejet/models/model_file.h"
#include "moejet/models/torchscript.h"

namespace moejet::cli {

namespace {

struct ExportArgs {
  ModelSource src;
  std::string out, format = "torchscript", device = "cpu", superclasses;
  int64_t batch = 1;
};

// "dir/model.pt" -> "dir/model.json": the preprocessing and class names beside the archive.
std::string sidecar_path(const std::string& out) {
  const auto dot = out.rfind('.');
  const auto slash = out.rfind('/');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return (has_ext ? out.substr(0, dot) : out) + ".json";
}

}  // namespace

Runner add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* sub = app.add_subcommand(
      "export", "write a model for use without moejet: TorchScript (any model) or plain timm safetensors (dense)");
  add_model_source_flags(*sub, a->src);
  sub->add_option("-o,--out", a->out,
                  "output file (torchscript: e.g. model.pt, with model.json beside it; timm: .safetensors or .pth)")
      ->required();
  sub->add_option("-f,--format", a->format,
                  "torchscript: a traced module for torch.jit.load / torch::jit::load; timm: a dense model's "
                  "weights under timm's keys")
      ->capture_default_str()
      ->check(CLI::IsMember({"torchscript", "timm"}));
  sub->add_option("--batch", a->batch, "torchscript: the batch size the module is traced for (sizes are fixed)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--superclasses", a->superclasses,
                  "Mobile V-MoE: super-class file to store beside the export (default: the checkpoint's)");
  sub->add_option("--device", a->device, "device to trace on (the module runs on that device)")->capture_default_str();
  return [a]() {
    if (a->format == "timm") {
      check<ConfigError>(ends_with(a->out, ".safetensors") || ends_with(a->out, ".pth"),
                         "export --format timm: expected a .safetensors or .pth file, got {}", a->out);
      return convert_checkpoint(a->src.checkpoint, a->out, "timm", a->src.model, a->src.sets);
    }
    auto device = parse_device(a->device);
    const auto im = load_inference_model(a->src, device, {});
    const auto& loaded = im.loaded;
    const auto& pre = im.pre;
    auto model = loaded.model;

    torch::manual_seed(0);
    const auto example =
        torch::randn({a->batch, model->in_chans(), model->image_size(), model->image_size()}, torch::device(device));
    auto module = models::trace_model(model, example);

    // What a user of the file needs to feed it and read it: timm's pretrained_cfg plus the batch
    // size it was traced for, the outputs, and a Mobile V-MoE's super-classes.
    json info = data::to_pretrained_cfg(pre.preprocess);
    info["batch_size"] = a->batch;
    info["architecture"] = model->arch();
    info["model"] = loaded.config_json;
    info["outputs"] = {{"forward", "logits [B, num_classes]"}};
    if (model->router) {
      info["outputs"]["route"] = "router logits [B, num_experts]; argmax = the expert each image runs";
      if (auto sc = im.superclasses(a->superclasses)) {
        info["superclasses"] = sc->to_json();
      }
    }
    info["moejet_version"] = MOEJET_VERSION;
    const auto bytes = models::serialize_torchscript(module, {{"moejet.json", info.dump(2)}});

    // Check the archive before writing it: loaded back without moejet's modules, it must give
    // moejet's logits.
    std::istringstream in(bytes);
    auto back = torch::jit::load(in, device);
    torch::NoGradGuard no_grad;
    const auto x = torch::randn_like(example);
    const auto ours = model->forward(x);
    const auto theirs = back.forward({x}).toTensor();
    const double diff = (ours - theirs).abs().max().item<double>();
    const double scale = ours.abs().max().item<double>();
    check<Error>(diff <= 1e-4 * std::max(1.0, scale),
                 "{}: the traced module's logits differ from moejet's by {:.3g} (largest {:.3g}); nothing written",
                 a->out, diff, scale);
    write_atomic(a->out, [&](std::ostream& os) { os.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
    const auto side = sidecar_path(a->out);
    write_json_file(side, info);
    spdlog::info("wrote {} (TorchScript, batch {}) and {}; reloaded, its logits match moejet's to {:.2g}", a->out,
                 a->batch, side, diff);
    return 0;
  };
}

}  // namespace moejet::cli
