#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/train/run_dir.h"
#include "moejet/train/trainer.h"

namespace moejet::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string out, init, device, data, precision;
  int64_t epochs = 0, batch_size = 0, max_steps = -1, stop_after_epochs = 0;
  double lr = 0;
  int64_t seed = -1;
  int workers = -1, nproc = 1;
  bool resume = false, overwrite = false, quiet = false;
};

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub = app.add_subcommand("train", "train or fine-tune a model from a JSON config");
  sub->add_option("-c,--config", args->config, "training config JSON (see configs/)");
  sub->add_option("--set", args->sets, "override a config value, e.g. --set optim.lr=5e-4 --set model.depth=6");
  sub->add_option("-o,--out", args->out,
                  "run folder (train.out_dir); default: a new runs/<config>-<date>-<time> for each run");
  sub->add_option("--init", args->init, "initialise from a checkpoint (timm or moejet layout)");
  sub->add_option("--data", args->data, "data set spec (data.dataset), e.g. fashion-mnist, folder:DIR");
  sub->add_option("--epochs", args->epochs, "train.epochs");
  sub->add_option("--batch-size", args->batch_size, "train.batch_size");
  sub->add_option("--lr", args->lr, "optim.lr (peak)");
  sub->add_option("--seed", args->seed, "train.seed");
  sub->add_option("--device", args->device, "cpu, cuda or cuda:N");
  sub->add_option("--precision", args->precision,
                  "train.precision: fp32, bf16 (mixed precision) or auto (bf16 where the CPU/GPU has it natively)");
  sub->add_option("--workers", args->workers, "data.num_workers");
  sub->add_option("--max-steps", args->max_steps, "stop after this many optimizer steps");
  sub->add_option("--stop-after-epochs", args->stop_after_epochs,
                  "stop resumably after N epochs of this invocation (time-sliced jobs)");
  sub->add_flag("--resume", args->resume, "continue the run in --out (last.safetensors and its state file)");
  sub->add_flag("--overwrite", args->overwrite, "replace a run already in --out (otherwise an error)")
      ->excludes("--resume");
  sub->add_flag("-q,--quiet", args->quiet, "no progress bars");
  sub->add_option("--nproc", args->nproc,
                  "data-parallel over N local processes (c10d/Gloo); multi-machine jobs set RANK, "
                  "WORLD_SIZE, MASTER_ADDR, MASTER_PORT as for torchrun");
  return [args, sub]() {
    json j = args->config.empty() ? json::object() : read_json_file(resolve_config_path(args->config));
    std::vector<std::string> sets = args->sets;
    auto set = [&](const std::string& key, const json& v) { sets.push_back(key + "=" + v.dump()); };
    if (!args->out.empty())
      set("train.out_dir", args->out);
    if (!args->init.empty())
      set("train.init", args->init);
    if (!args->data.empty())
      set("data.dataset", args->data);
    if (!args->device.empty())
      set("train.device", args->device);
    if (!args->precision.empty())
      set("train.precision", args->precision);
    if (sub->count("--epochs") > 0)
      set("train.epochs", args->epochs);
    if (sub->count("--batch-size") > 0)
      set("train.batch_size", args->batch_size);
    check<ConfigError>(sub->count("--lr") == 0 || std::isfinite(args->lr), "--lr: must be a finite number, got {}",
                       args->lr);
    if (sub->count("--lr") > 0)
      set("optim.lr", args->lr);
    if (sub->count("--seed") > 0)
      set("train.seed", args->seed);
    if (sub->count("--workers") > 0)
      set("data.num_workers", args->workers);
    if (sub->count("--max-steps") > 0)
      set("train.max_steps", args->max_steps);
    apply_overrides(j, sets);
    auto config = train::train_config_from_json(j);
    if (config.train.out_dir.empty()) {
      // One folder per run. --nproc workers inherit the parent's choice, so all ranks agree.
      check<ConfigError>(!args->resume, "--resume: name the run to continue with --out");
      const char* chosen = std::getenv("MOEJET_RUN_DIR");
      config.train.out_dir =
          chosen != nullptr
              ? chosen
              : train::default_run_dir(args->config.empty() ? std::string("train")
                                                            : std::filesystem::path(args->config).stem().string());
      setenv("MOEJET_RUN_DIR", config.train.out_dir.c_str(), 1);
    }
    if (args->nproc > 1 && std::getenv("WORLD_SIZE") == nullptr) {
      return launch_local_workers(args->nproc);
    }
    train::TrainOptions options;
    options.resume = args->resume;
    options.overwrite = args->overwrite;
    TerminalProgress bars;
    options.progress = args->quiet ? nullptr : &bars;
    options.stop_after_epochs = args->stop_after_epochs;
    options.dist = train::dist_config_from_env();
    if (options.dist.rank > 0) {
      spdlog::set_level(spdlog::level::warn);  // rank 0 speaks for the job
    }
    auto result = train::run_training(config, options);
    if (result.interrupted_by) {
      return 128 + result.interrupted_by;  // the shell's convention for a signal's end
    }
    spdlog::info("done: {} steps, final top1 {:.2f}%, best top1 {:.2f}%, {:.1f} train img/s; run in {}", result.steps,
                 result.final_top1, result.best_top1, result.train_images_per_second, result.out_dir);
    return 0;
  };
}

}  // namespace moejet::cli
