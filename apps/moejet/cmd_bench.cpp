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
#include "moejet/eval/inference_timing.h"
#include "moejet/kernels/matmul.h"
#include "moejet/kernels/product_floor.h"
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
  bool infer = false, floor = false;
  int64_t infer_batch = 64, latency_reps = 30, trace_steps = 1;
  std::string device = "cpu", out, trace_dir;
};

// Batch-1 latency and large-batch throughput of each model in each precision, forwards
// interleaved across models and precisions. Returns the JSON rows.
json bench_inference(std::vector<train::TimedTrainStep>& subjects, const std::vector<kernels::Precision>& precisions,
                     torch::Device device, const BenchArgs& a, std::map<kernels::Precision, double>& peak) {
  check<ConfigError>(a.infer_batch >= 1 && a.latency_reps >= 1, "bench: --infer-batch and --latency-reps must be >= 1");
  std::vector<std::vector<eval::TimedInference>> timers(precisions.size());
  for (size_t p = 0; p < precisions.size(); ++p) {
    for (auto& s : subjects) {
      timers[p].emplace_back(s.model(), device, precisions[p]);
    }
  }
  // [precision][model] -> seconds per forward
  auto measure = [&](int64_t batch, int64_t reps) {
    std::vector<std::vector<std::vector<double>>> t(precisions.size(),
                                                    std::vector<std::vector<double>>(subjects.size()));
    for (auto& row : timers) {
      for (auto& timer : row) {
        timer.set_batch(batch);
        for (int64_t i = 0; i < std::max<int64_t>(a.warmup, 1); ++i) {
          timer.forward();
        }
      }
    }
    for (int64_t i = 0; i < reps; ++i) {
      for (size_t m = 0; m < subjects.size(); ++m) {
        for (size_t p = 0; p < precisions.size(); ++p) {
          t[p][m].push_back(timers[p][m].forward());
        }
      }
    }
    return t;
  };
  const auto latency = measure(1, a.latency_reps);
  const auto throughput = measure(a.infer_batch, a.steps);
  fmt::print(
      "inference: batch-1 latency over {} forwards, throughput at batch {} (median of {}); ratio: p50 to "
      "the first model's in the same precision; a forward counts 2 x its MACs\n",
      a.latency_reps, a.infer_batch, a.steps);
  fmt::print("{:<36} {:>5} {:>9} {:>9} {:>9} {:>7} {:>10} {:>8} {:>6}\n", "model", "prec", "GMACs", "p50 (ms)",
             "p90 (ms)", "ratio", "img/s", "GFLOP/s", "peak");
  json rows = json::array();
  for (size_t p = 0; p < precisions.size(); ++p) {
    const double first_p50 = eval::quantile(latency[p][0], 0.5);
    for (size_t m = 0; m < subjects.size(); ++m) {
      const double macs = models::total_macs(subjects[m].model());
      const double p50 = eval::quantile(latency[p][m], 0.5), p90 = eval::quantile(latency[p][m], 0.9);
      const double batch_seconds = train::median(throughput[p][m]);
      const double img_s = static_cast<double>(a.infer_batch) / batch_seconds;
      const double gflops = 2.0 * macs * img_s / 1e9;
      const double peak_p = peak[precisions[p]];
      rows.push_back({{"model", subjects[m].name()},
                      {"precision", kernels::to_string(precisions[p])},
                      {"macs", macs},
                      {"latency_batch", 1},
                      {"latency_p50_seconds", p50},
                      {"latency_p90_seconds", p90},
                      {"latency_seconds", latency[p][m]},
                      {"latency_p50_ratio_to_first", p50 / first_p50},
                      {"throughput_batch", a.infer_batch},
                      {"throughput_img_per_s", img_s},
                      {"throughput_seconds", throughput[p][m]},
                      {"gflops_per_s", gflops},
                      {"fraction_of_gemm_peak", gflops / peak_p}});
      fmt::print("{:<36} {:>5} {:>9.3f} {:>9.2f} {:>9.2f} {:>7.3f} {:>10.1f} {:>8.1f} {:>5.0f}%\n", subjects[m].name(),
                 kernels::to_string(precisions[p]), macs / 1e9, 1e3 * p50, 1e3 * p90, p50 / first_p50, img_s, gflops,
                 100 * gflops / peak_p);
    }
  }
  return rows;
}

// Each model's products in one step (kernels/product_floor.h), timed alone and as they ran, beside
// the step: how much of the step its products take, and how much other code around them does.
// With the optimizer's floor at the run's memory rate, their sum is a floor of the whole step.
// `step_seconds` [precision][model]: the medians just measured at `batch`.
json bench_products_alone(std::vector<train::TimedTrainStep>& subjects,
                          const std::vector<kernels::Precision>& precisions, int64_t batch,
                          const std::vector<std::vector<double>>& step_seconds, torch::Device device,
                          double memory_rate) {
  constexpr int kReps = 5;
  // On CUDA a product's time in the step is its launch: only the time alone means anything.
  const bool cpu = device.is_cpu();
  fmt::print(
      "products at batch {}: every matrix product of one more step, recorded as it ran (in step; other: that "
      "step's time beyond its products: norms, activations, routing, convolutions, optimizer, autograd) and timed "
      "apart on warm operands of its shape (alone, median of {}); opt floor: the optimizer's bytes at the memory's "
      "rate; floor: alone + opt floor, the least a step can take on these kernels and this memory\n",
      batch, kReps);
  fmt::print("{:<36} {:>5} {:>9} {:>10} {:>6} {:>12} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8}\n", "model", "prec",
             "step (s)", "alone (s)", "share", "in step (s)", "other (s)", "opt floor", "floor (s)", "calls",
             "distinct", "GFLOP/s");
  json rows = json::array();
  for (size_t p = 0; p < precisions.size(); ++p) {
    for (size_t m = 0; m < subjects.size(); ++m) {
      subjects[m].set_precision(precisions[p]);
      std::vector<kernels::ProductCall> calls;
      double recorded_step = 0;
      {
        kernels::ProductRecorder recorder;
        recorded_step = subjects[m].step().total;
        calls = recorder.calls();
      }
      const auto f = kernels::product_floor(calls, kReps);
      const double step = step_seconds[p][m];
      const double opt_floor = train::optimizer_floor_seconds(subjects[m].optimizer_bytes(), memory_rate);
      json row = {{"model", subjects[m].name()},
                  {"precision", kernels::to_string(precisions[p])},
                  {"batch", batch},
                  {"step_seconds_median", step},
                  {"products_seconds", f.seconds},
                  {"products_flops", f.flops},
                  {"optimizer_floor_seconds", opt_floor},
                  {"floor_seconds", f.seconds + opt_floor},
                  {"product_calls", f.calls},
                  {"distinct_products", f.distinct}};
      row["products"] = json::array();
      for (const auto& g : f.groups) {
        json group = {{"key", g.key}, {"calls", g.calls}, {"seconds", g.seconds}, {"flops", g.flops}};
        if (cpu) {
          group["in_step_seconds"] = g.in_step;
        }
        row["products"].push_back(group);
      }
      if (cpu) {
        row["recorded_step_seconds"] = recorded_step;
        row["products_in_step_seconds"] = f.in_step;
        row["other_seconds"] = recorded_step - f.in_step;
      }
      rows.push_back(row);
      fmt::print("{:<36} {:>5} {:>9.3f} {:>10.3f} {:>5.0f}% {:>12} {:>10} {:>10.3f} {:>10.3f} {:>6} {:>8} {:>8.1f}\n",
                 subjects[m].name(), kernels::to_string(precisions[p]), step, f.seconds, 100 * f.seconds / step,
                 cpu ? fmt::format("{:.3f}", f.in_step) : "-",
                 cpu ? fmt::format("{:.3f}", recorded_step - f.in_step) : "-", opt_floor, f.seconds + opt_floor,
                 f.calls, f.distinct, f.seconds > 0 ? f.flops / f.seconds / 1e9 : 0.0);
    }
  }
  return rows;
}

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
  sub->add_flag("--infer", a->infer,
                "time inference instead of training: batch-1 latency (p50/p90 of --latency-reps forwards) "
                "and throughput at --infer-batch, eval mode, no autograd");
  sub->add_option("--infer-batch", a->infer_batch, "batch of the inference throughput")->capture_default_str();
  sub->add_option("--latency-reps", a->latency_reps, "batch-1 forwards per model for the latency percentiles")
      ->capture_default_str();
  sub->add_flag("--floor", a->floor,
                "after timing, record one more step of each model in each precision (at the last batch size) "
                "and time each of its matrix products alone: the step's floor on these kernels, and what "
                "the step spends beyond its products");
  sub->add_option("--trace", a->trace_dir,
                  "after timing, profile --trace-steps more steps per model (at the last batch size and "
                  "precision) into DIR/<n>.trace.json (chrome://tracing / Perfetto)");
  sub->add_option("--trace-steps", a->trace_steps,
                  "steps in each trace: several let a noisy machine's outliers be seen and averaged out")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
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
    if (a->infer) {
      result["mode"] = "infer";
      result["runs"] = bench_inference(subjects, precisions, device, *a, peak);
      if (!a->out.empty()) {
        write_json_file(a->out, result);
      }
      return 0;
    }
    // The optimizer streams its state through memory: its yardstick is the memory's rate.
    const double memory_rate = train::memory_gbps(device);
    result["memory_gbps"] = memory_rate;
    fmt::print("memory: {:.1f} GB/s (a += b in place, fp32, 2 x 256 MB, this run)\n", memory_rate);
    fmt::print(
        "a step counts 6 x its forward MACs; ratio: to the first model in the same precision; "
        "x fp32: the same model's fp32 step over this one; mem: the optimizer's floor (28 bytes a parameter at "
        "that rate) over its time\n");
    fmt::print("{:<36} {:>5} {:>6} {:>9} {:>9} {:>8} {:>7} {:>6} {:>8} {:>6} {:>8} {:>8} {:>8} {:>5}\n", "model",
               "prec", "batch", "Param (M)", "step (s)", "img/s", "ratio", "x fp32", "GFLOP/s", "peak", "fwd (s)",
               "bwd (s)", "opt (s)", "mem");
    std::vector<std::vector<double>> last_steps;  // [precision][model] medians at the last batch size
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
      last_steps.assign(precisions.size(), std::vector<double>(subjects.size()));
      for (size_t p = 0; p < precisions.size(); ++p) {
        const double first = samples[p].front().median().total;
        for (size_t m = 0; m < subjects.size(); ++m) {
          subjects[m].set_precision(precisions[p]);
          const auto r = train::report_step(subjects[m], samples[p][m], first, peak[precisions[p]], memory_rate);
          // The same model's fp32 step over this one, when fp32 was timed (it is then first).
          const bool with_fp32 = precisions.front() == kernels::Precision::fp32;
          const double speedup = samples.front()[m].median().total / r.median.total;
          auto j = r.to_json();
          if (with_fp32) {
            j["speedup_over_fp32"] = speedup;
          }
          run["models"].push_back(j);
          last_steps[p][m] = r.median.total;
          fmt::print(
              "{:<36} {:>5} {:>6} {:>9.2f} {:>9.3f} {:>8.1f} {:>7.3f} {:>6} {:>8.1f} {:>5.0f}% {:>8.3f} {:>8.3f} "
              "{:>8.3f} {:>4.0f}%\n",
              r.model, r.precision, batch, static_cast<double>(r.params) / 1e6, r.median.total, r.images_per_second(),
              r.ratio_to_first, with_fp32 ? fmt::format("{:.2f}", speedup) : std::string("-"), r.gflops_per_second(),
              100 * r.gflops_per_second() / r.gemm_peak_gflops, r.median.forward, r.median.backward, r.median.optimizer,
              100 * r.optimizer_floor_seconds() / r.median.optimizer);
        }
      }
      std::fflush(stdout);
      result["runs"].push_back(run);
    }
    if (a->floor) {
      result["products_alone"] =
          bench_products_alone(subjects, precisions, a->batches.back(), last_steps, device, memory_rate);
    }
    if (!a->trace_dir.empty()) {
      std::filesystem::create_directories(a->trace_dir);
      for (size_t i = 0; i < subjects.size(); ++i) {
        std::ostringstream trace;
        {
          torch::autograd::profiler::RecordProfile guard(trace);
          for (int64_t k = 0; k < a->trace_steps; ++k) {
            subjects[i].step();
          }
        }
        auto path = (std::filesystem::path(a->trace_dir) / (std::to_string(i) + ".trace.json")).string();
        write_atomic(path, [&](std::ostream& o) { o << trace.str(); });
        spdlog::info("{}: {} profiled step(s) -> {}", subjects[i].name(), a->trace_steps, path);
      }
    }
    if (!a->out.empty()) {
      write_json_file(a->out, result);
    }
    return 0;
  };
}

}  // namespace moejet::cli
