#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>
#include <sstream>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/kernels/matmul.h"
#include "moejet/models/model_config.h"
#include "moejet/train/step_timing.h"

namespace moejet::cli {

namespace {

struct BenchArgs {
  std::vector<std::string> models{"configs/paper/vit_tiny.json", "configs/paper/vjetmoe_tiny.json"};
  std::vector<std::string> sets;
  std::vector<int64_t> batches{32, 64, 128};
  std::vector<std::string> precisions;  // empty: fp32, and bf16 where the device has it
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
  sub->add_option("--precision", a->precisions,
                  "precision(s) of the matrix products, e.g. fp32,bf16 (default: both where the device "
                  "has bf16, else fp32)")
      ->delimiter(',');
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
    std::vector<kernels::Precision> precisions;
    for (const auto& text : a->precisions) {
      precisions.push_back(kernels::parse_precision(text, "bench --precision"));
    }
    if (precisions.empty()) {
      precisions.push_back(kernels::Precision::fp32);
      if (kernels::bf16_native(device)) {
        precisions.push_back(kernels::Precision::bf16);
      }
    }
    json result = {{"device", a->device},
                   {"steps", a->steps},
                   {"system", system_info().summary()},
                   {"gemm_peak_gflops", json::object()},
                   {"runs", json::array()}};
    // The machine's GEMM rate in each precision, measured in this run: what the steps' achieved
    // rates are read against.
    std::map<kernels::Precision, double> peak;
    for (const auto p : precisions) {
      peak[p] = train::gemm_gflops(device, p);
      result["gemm_peak_gflops"][kernels::to_string(p)] = peak[p];
      fmt::print("GEMM peak {}: {:.0f} GFLOP/s ({}, 2048^3, this run)\n", kernels::to_string(p), peak[p],
                 kernels::gemm_kernel(device, p));
    }
    fmt::print(
        "a step counts 6 x its forward MACs; ratio: to the first model in the same precision; "
        "x fp32: the same model's fp32 step over this one\n");
    fmt::print("{:<36} {:>5} {:>6} {:>9} {:>9} {:>8} {:>7} {:>6} {:>8} {:>6} {:>8} {:>8} {:>8}\n", "model", "prec",
               "batch", "Param (M)", "step (s)", "img/s", "ratio", "x fp32", "GFLOP/s", "peak", "fwd (s)", "bwd (s)",
               "opt (s)");
    for (const int64_t batch : a->batches) {
      // [precision][model], stepped interleaved so that machine noise (other load, thermal state)
      // hits every model and precision alike.
      std::vector<std::vector<train::StepSamples>> samples(precisions.size(),
                                                           std::vector<train::StepSamples>(subjects.size()));
      for (auto& s : subjects) {
        s.set_batch(batch);
        for (const auto p : precisions) {
          s.set_precision(p);
          for (int64_t i = 0; i < a->warmup; ++i) {
            s.step();
          }
        }
      }
      for (int64_t i = 0; i < a->steps; ++i) {
        for (size_t m = 0; m < subjects.size(); ++m) {
          for (size_t p = 0; p < precisions.size(); ++p) {
            subjects[m].set_precision(precisions[p]);
            samples[p][m].steps.push_back(subjects[m].step());
          }
        }
      }
      json run = {{"batch", batch}, {"models", json::array()}};
      for (size_t p = 0; p < precisions.size(); ++p) {
        const double first = samples[p].front().median().total;
        for (size_t m = 0; m < subjects.size(); ++m) {
          subjects[m].set_precision(precisions[p]);
          const auto r = train::report_step(subjects[m], samples[p][m], first, peak[precisions[p]]);
          const double fp32_seconds = samples.front()[m].median().total;
          auto j = r.to_json();
          if (precisions.front() == kernels::Precision::fp32) {
            j["speedup_over_fp32"] = fp32_seconds / r.median.total;
          }
          run["models"].push_back(j);
          fmt::print(
              "{:<36} {:>5} {:>6} {:>9.2f} {:>9.3f} {:>8.1f} {:>7.3f} {:>6} {:>8.1f} {:>5.0f}% {:>8.3f} {:>8.3f} "
              "{:>8.3f}\n",
              r.model, r.precision, batch, static_cast<double>(r.params) / 1e6, r.median.total, r.images_per_second(),
              r.ratio_to_first,
              precisions.front() == kernels::Precision::fp32 ? fmt::format("{:.2f}", fp32_seconds / r.median.total)
                                                             : std::string("-"),
              r.gflops_per_second(), 100 * r.gflops_per_second() / r.gemm_peak_gflops, r.median.forward,
              r.median.backward, r.median.optimizer);
        }
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
