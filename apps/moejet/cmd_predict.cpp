#include <spdlog/spdlog.h>

#include <iostream>
#include <limits>

#include <torch/torch.h>

#include "commands.h"
#include "inference_model.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/data/loader.h"
#include "moejet/eval/checkpoint_inputs.h"
#include "moejet/eval/predict.h"
#include "moejet/kernels/precision.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

namespace {

struct PredictArgs {
  ModelSource src;
  std::string out, device = "cpu", superclasses, format = "table", precision = "fp32";
  std::vector<std::string> inputs;
  eval::PreprocessOverrides pre;
  int64_t topk = 5, batch_size = 64, max_image_pixels = data::kDefaultMaxImagePixels;
  int workers = 2;
  bool quiet = false;
};

}  // namespace

Runner add_predict_command(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto* sub = app.add_subcommand("predict", "top-k classes of image files with a trained model (timm's inference.py)");
  add_model_source_flags(*sub, a->src);
  sub->add_option("inputs", a->inputs,
                  "image files, folders (searched recursively) or list files (one image path per line)")
      ->required();
  sub->add_option("-k,--topk", a->topk, "classes per image")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("-f,--format", a->format, "table, jsonl or csv")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "jsonl", "csv"}));
  sub->add_option("-o,--out", a->out, "write the predictions to this file (default: standard output)");
  sub->add_option("--batch-size", a->batch_size)->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--workers", a->workers)->capture_default_str();
  add_preprocess_flags(*sub, a->pre);
  sub->add_option("--max-image-pixels", a->max_image_pixels,
                  "refuse image files larger than this many pixels (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, std::numeric_limits<int64_t>::max()));
  sub->add_option("--superclasses", a->superclasses,
                  "Mobile V-MoE: super-class file naming each expert's classes (default: the one stored in the "
                  "checkpoint by training)");
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("--precision", a->precision,
                  "precision of the matrix products: fp32, bf16 (as eval --precision bf16 scores) or auto (bf16 "
                  "where the device has it)")
      ->capture_default_str();
  sub->add_flag("-q,--quiet", a->quiet, "no progress bar");
  return [a]() {
    auto device = parse_device(a->device);
    const auto precision = kernels::resolve_precision(a->precision, device, "--precision");
    kernels::require_precision(precision, device);
    const auto im = load_inference_model(a->src, device, a->pre);
    const auto& loaded = im.loaded;
    const auto& pre = im.pre;
    auto model = loaded.model;
    const auto files = data::collect_image_files(a->inputs);
    const int channels = static_cast<int>(pre.preprocess.input_size.at(0));
    auto images = data::open_image_files(files, channels, a->max_image_pixels);
    spdlog::info("{}", images->describe());

    eval::PredictionLabels labels;
    labels.class_names = pre.preprocess.label_names;
    if (labels.class_names.empty()) {
      spdlog::warn("{}: no class names stored; classes are printed as indices", a->src.checkpoint);
    }
    eval::RouterFn router;
    if (model->router) {
      router = [&]() { return model->last_routing.logits; };
      if (auto sc = im.superclasses(a->superclasses)) {
        labels.superclass_members = sc->members();
      }
    }

    data::LoaderOptions lo;
    lo.batch_size = a->batch_size;
    lo.shuffle = false;
    lo.drop_last = false;
    lo.num_workers = a->workers;
    data::Loader loader(images, data::make_eval_transform(data::eval_augment(pre.preprocess), channels), lo);
    TerminalProgress bar;
    kernels::PrecisionScope scope(precision);
    const auto predictions = eval::predict([&](const torch::Tensor& x) { return model->forward(x); }, loader, a->topk,
                                           device, a->quiet ? nullptr : &bar, router);
    const auto text = eval::format_predictions(files, predictions, labels, a->format);
    if (a->out.empty()) {
      std::cout << text << std::flush;
    } else {
      write_atomic(a->out, [&](std::ostream& os) { os << text; });
      spdlog::info("wrote {} predictions to {}", predictions.size(), a->out);
    }
    return 0;
  };
}

}  // namespace moejet::cli
