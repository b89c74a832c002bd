#include <spdlog/spdlog.h>

#include <limits>

#include <torch/torch.h>

#include "commands.h"
#include "inference_model.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/data/loader.h"
#include "moejet/eval/checkpoint_inputs.h"
#include "moejet/eval/evaluate.h"
#include "moejet/kernels/precision.h"
#include "moejet/models/model_file.h"

namespace moejet::cli {

namespace {

struct EvalArgs {
  ModelSource src;
  std::string out, device = "cpu", superclasses, precision = "fp32";
  eval::DataOverrides data;
  eval::PreprocessOverrides pre;
  int64_t batch_size = 256;
  int workers = 2;
  bool quiet = false;
};

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand("eval", "evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix");
  add_model_source_flags(*sub, a->src);
  sub->add_option("--data", a->data.dataset, "data set spec (default: the one the checkpoint was trained on)");
  sub->add_option("--split", a->data.split, "split to evaluate (default: the training config's eval split, else test)");
  sub->add_option("--classes", a->data.classes, "evaluate only these classes (relabelled in order)");
  sub->add_option("--limit", a->data.limit, "at most this many images (class-stratified)");
  sub->add_option("--max-image-pixels", a->data.max_image_pixels,
                  "refuse image files larger than this many pixels (default: as in training, else PIL's "
                  "89478485; 0 = no limit)")
      ->check(CLI::Range(int64_t{0}, std::numeric_limits<int64_t>::max()));
  sub->add_option("--range", a->data.range, "only images START..END-1 of the split (as data.train_range)")->expected(2);
  sub->add_option("--batch-size", a->batch_size)->capture_default_str();
  sub->add_option("--workers", a->workers)->capture_default_str();
  add_preprocess_flags(*sub, a->pre);
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("--precision", a->precision,
                  "precision of the matrix products: fp32, bf16 (what a run with train.precision bf16 "
                  "scores between epochs) or auto (bf16 where the device has it)")
      ->capture_default_str();
  sub->add_option("--superclasses", a->superclasses,
                  "Mobile V-MoE: super-class file for router accuracy (default: the one stored in "
                  "the checkpoint by training)");
  sub->add_option("-o,--out", a->out, "write eval.json and confusion.csv into this directory");
  sub->add_flag("-q,--quiet", a->quiet, "no progress bar");
  return [a]() {
    auto device = parse_device(a->device);
    const auto precision = kernels::resolve_precision(a->precision, device, "--precision");
    kernels::require_precision(precision, device);
    const auto im = load_inference_model(a->src, device, a->pre);
    const auto& cfg = im.loaded.config;
    const auto& meta = im.loaded.metadata;
    const auto& pre = im.pre;
    auto model = im.loaded.model;
    // Data: the checkpoint's own unless flags say otherwise; the log says which.
    const auto d = eval::open_eval_data(meta, a->src.checkpoint, a->data, cfg, pre.preprocess);
    const auto names = d.dataset->class_names();
    data::LoaderOptions lo;
    lo.batch_size = a->batch_size;
    lo.shuffle = false;
    lo.drop_last = false;
    lo.num_workers = a->workers;
    data::Loader loader(d.dataset, data::make_eval_transform(data::eval_augment(pre.preprocess), d.dataset->channels()),
                        lo);

    eval::RouterFn router;
    torch::Tensor superclass_of;
    int64_t ways = 0;
    if (auto sc = im.superclasses(a->superclasses)) {
      ways = sc->num_superclasses;
      superclass_of = torch::tensor(sc->superclass_of, torch::kLong);
      router = [&]() { return model->last_routing.logits; };
    }
    TerminalProgress bar;
    kernels::PrecisionScope scope(precision);
    auto r = eval::evaluate([&](const torch::Tensor& x) { return model->forward(x); }, loader, cfg.num_classes(),
                            device, a->quiet ? nullptr : &bar, router, superclass_of);
    fmt::print("{}", r.summary(d.dataset->describe(), names, ways));
    if (!a->out.empty()) {
      json j = r.to_json(names);
      j.update({{"checkpoint", a->src.checkpoint},
                {"data", d.config.dataset},
                {"split", d.split},
                {"precision", kernels::to_string(precision)},
                {"preprocessing", data::to_pretrained_cfg(pre.preprocess)}});
      write_json_file(a->out + "/eval.json", j);
      eval::write_confusion_csv(a->out + "/confusion.csv", r.confusion, names);
      spdlog::info("wrote {}/eval.json and {}/confusion.csv", a->out, a->out);
    }
    return 0;
  };
}

}  // namespace moejet::cli
