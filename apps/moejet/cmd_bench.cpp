#include <spdlog/spdlog.h>

#include <filesystem>
#include <sstream>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/models/model_config.h"
#include "moejet/train/step_timing.h"

namespace moejet::cli {

namespace {

struct BenchArgs {
  std::vector<std::string> models{"configs/paper/vit_tiny.json", "configs/paper/vjetmoe_tiny.json"};
  std::vector<std::string> sets;
  std::vector<int64_t> batches{32, 64, 128};
  int64_t steps = 5, warmup = 1;
  std::string device = "cpu", out, trace_dir;
};

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand(
      "bench", "train-step time of models measured side by side in one run, with ratios to the first");
  sub->add_option("-m,--models", a->models, "presets or model/train config JSON files")->capture_default_str();
  sub->add_option("--set", a->sets, "override applied to every model config, e.g. --set img_size=112");
  sub->add_option("--batch", a->batches, "batch size(s); a list (e.g. 32,64,128) times every model at each, in one run")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--steps", a->steps, "timed steps per model (interleaved)")->capture_default_str();
  sub->add_option("--warmup", a->warmup)->capture_default_str();
  sub->add_option("--device", a->device)->capture_default_str();
  sub->add_option("-o,--out", a->out, "also write the JSON result to this file");
  sub->add_option("--trace", a->trace_dir,
                  "after timing, profile one more step per model (at the last batch size) into "
                  "DIR/<n>.trace.json (chrome://tracing / Perfetto)");
  return [a]() {
    auto device = parse_device(a->device);
    for (const int64_t batch : a->batches) {
      check<ConfigError>(batch >= 1, "bench: --batch must be >= 1, got {}", batch);
    }
    std::vector<train::TimedTrainStep> subjects;
    for (const auto& spec : a->models) {
      json mj = load_model_json(spec);
      apply_overrides(mj, a->sets);
      torch::manual_seed(0);
      subjects.emplace_back(spec, models::make_model(models::model_config_from_json(mj)), device);
      spdlog::info("{}: {:.2f} M params", spec, models::count_parameters(subjects.back().model()) / 1e6);
    }
    json result = {
        {"device", a->device}, {"steps", a->steps}, {"system", system_info().summary()}, {"runs", json::array()}};
    fmt::print("{:<40} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n", "model", "batch", "Param (M)", "step (s)",
               "img/s", "ratio", "fwd (s)", "bwd (s)", "opt (s)");
    for (const int64_t batch : a->batches) {
      std::vector<train::StepSamples> samples(subjects.size());
      for (auto& s : subjects) {
        s.set_batch(batch);
        for (int64_t i = 0; i < a->warmup; ++i) {
          s.step();
        }
      }
      // Interleaved so that machine noise (other load, thermal state) hits every model alike.
      for (int64_t i = 0; i < a->steps; ++i) {
        for (size_t m = 0; m < subjects.size(); ++m) {
          samples[m].steps.push_back(subjects[m].step());
        }
      }
      json run = {{"batch", batch}, {"models", json::array()}};
      const double base = samples.front().median().total;
      for (size_t m = 0; m < subjects.size(); ++m) {
        auto& model = subjects[m].model();
        const auto med = samples[m].median();
        double macs = 0;
        for (auto& kv : model.macs_by_layer()) {
          macs += kv.second;
        }
        const int64_t params = models::count_parameters(model);
        run["models"].push_back({{"model", subjects[m].name()},
                                 {"params", params},
                                 {"flops", macs},
                                 {"step_seconds_median", med.total},
                                 {"img_per_s", static_cast<double>(batch) / med.total},
                                 {"ratio_to_first", med.total / base},
                                 {"step_seconds", samples[m].totals()},
                                 {"forward_seconds_median", med.forward},
                                 {"backward_seconds_median", med.backward},
                                 {"optimizer_seconds_median", med.optimizer}});
        fmt::print("{:<40} {:>6} {:>10.2f} {:>10.3f} {:>8.1f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f}\n",
                   subjects[m].name(), batch, static_cast<double>(params) / 1e6, med.total,
                   static_cast<double>(batch) / med.total, med.total / base, med.forward, med.backward, med.optimizer);
      }
      std::fflush(stdout);
      result["runs"].push_back(run);
    }
    if (!a->trace_dir.empty()) {
      std::filesystem::create_directories(a->trace_dir);
      for (size_t i = 0; i < subjects.size(); ++i) {
        std::ostringstream trace;
        {
          torch::autograd::profiler::RecordProfile guard(trace);
          subjects[i].step();
        }
        auto path = (std::filesystem::path(a->trace_dir) / (std::to_string(i) + ".trace.json")).string();
        write_atomic(path, [&](std::ostream& o) { o << trace.str(); });
        spdlog::info("{}: one profiled step -> {}", subjects[i].name(), path);
      }
    }
    if (!a->out.empty()) {
      write_json_file(a->out, result);
    }
    return 0;
  };
}

}  // namespace moejet::cli
