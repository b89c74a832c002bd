#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/system.h"
#include "moejet/models/model_config.h"
#include "moejet/train/optimizer.h"
#include "moejet/train/trainer.h"

namespace moejet::cli {

namespace {

struct BenchArgs {
  std::vector<std::string> models{"configs/paper/vit_tiny.json", "configs/paper/vjetmoe_tiny.json"};
  std::vector<std::string> sets;
  std::vector<int64_t> batches{32, 64, 128};
  int64_t steps = 5, warmup = 1;
  std::string device = "cpu", out, trace_dir;
};

// One model under test: a full training step (forward, backward, AdamW with the trainer's
// parameter groups) on a fixed random batch.
struct Subject {
  std::string name;
  models::ModelPtr model;
  train::OptimizerBundle opt;
  torch::Tensor x, y;
  std::vector<double> seconds;
  // Per-phase times of each step (forward, backward, optimizer), to see where a ratio comes from.
  std::vector<double> forward_s, backward_s, optimizer_s;

  void step(torch::Device device) {
    using clock = std::chrono::steady_clock;
    auto since = [](clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); };
    auto sync = [&] {
      if (device.is_cuda()) {
        torch::cuda::synchronize();
      }
    };
    auto t0 = clock::now();
    train::clear_grads(*opt.optimizer);
    auto loss = train::soft_target_cross_entropy(model->forward(x), y);
    if (auto aux = model->moe_aux_loss(); aux.defined()) {
      loss = loss + aux;
    }
    sync();
    auto t1 = clock::now();
    loss.backward();
    sync();
    auto t2 = clock::now();
    opt.optimizer->step();
    sync();
    loss.item<float>();
    forward_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    backward_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    optimizer_s.push_back(since(t2));
    seconds.push_back(since(t0));
  }
  void clear() {
    seconds.clear();
    forward_s.clear();
    backward_s.clear();
    optimizer_s.clear();
  }
};

double median(std::vector<double> s) {
  std::sort(s.begin(), s.end());
  return s.empty() ? 0.0 : s[s.size() / 2];
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
  sub->add_option("-o,--out", a->out, "also write the JSON result to this file");
  sub->add_option("--trace", a->trace_dir,
                  "after timing, profile one more step per model (at the last batch size) into "
                  "DIR/<n>.trace.json (chrome://tracing / Perfetto)");
  return [a]() {
    auto device = parse_device(a->device);
    for (const int64_t batch : a->batches) {
      if (batch < 1) {
        throw ConfigError(fmt::format("bench: --batch must be >= 1, got {}", batch));
      }
    }
    std::vector<Subject> subjects;
    for (const auto& spec : a->models) {
      Subject s;
      s.name = spec;
      json mj = load_model_json(spec);
      apply_overrides(mj, a->sets);
      torch::manual_seed(0);
      s.model = models::make_model(models::model_config_from_json(mj));
      s.model->to(device);
      s.model->train();
      for (auto& entry : s.model->moe_layer_list) {
        entry.second->collect_stats = false;
      }
      s.opt = train::make_optimizer(*s.model, train::OptimConfig{});
      spdlog::info("{}: {:.2f} M params", spec, models::count_parameters(*s.model) / 1e6);
      subjects.push_back(std::move(s));
    }
    auto info = system_info();
    json result = {{"device", a->device}, {"steps", a->steps}, {"system", info.summary()}, {"runs", json::array()}};
    fmt::print("{:<40} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n", "model", "batch", "Param (M)", "step (s)",
               "img/s", "ratio", "fwd (s)", "bwd (s)", "opt (s)");
    for (const int64_t batch : a->batches) {
      for (auto& s : subjects) {
        const int64_t size = s.model->image_size();
        s.x = torch::randn({batch, s.model->in_chans(), size, size}, device);
        s.y = torch::softmax(torch::randn({batch, s.model->num_classes()}, device), 1);
        for (int64_t i = 0; i < a->warmup; ++i) {
          s.step(device);
        }
        s.clear();
      }
      // Interleaved so that machine noise (other load, thermal state) hits every model alike.
      for (int64_t i = 0; i < a->steps; ++i) {
        for (auto& s : subjects) {
          s.step(device);
        }
      }
      json run = {{"batch", batch}, {"models", json::array()}};
      const double base = median(subjects.front().seconds);
      for (auto& s : subjects) {
        const double med = median(s.seconds), fwd = median(s.forward_s), bwd = median(s.backward_s),
                     optim = median(s.optimizer_s);
        double macs = 0;
        for (auto& kv : s.model->macs_by_layer()) {
          macs += kv.second;
        }
        run["models"].push_back({{"model", s.name},
                                 {"params", models::count_parameters(*s.model)},
                                 {"flops", macs},
                                 {"step_seconds_median", med},
                                 {"img_per_s", static_cast<double>(batch) / med},
                                 {"ratio_to_first", med / base},
                                 {"step_seconds", s.seconds},
                                 {"forward_seconds_median", fwd},
                                 {"backward_seconds_median", bwd},
                                 {"optimizer_seconds_median", optim}});
        fmt::print("{:<40} {:>6} {:>10.2f} {:>10.3f} {:>8.1f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f}\n", s.name, batch,
                   models::count_parameters(*s.model) / 1e6, med, static_cast<double>(batch) / med, med / base, fwd,
                   bwd, optim);
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
          subjects[i].step(device);
        }
        auto path = (std::filesystem::path(a->trace_dir) / (std::to_string(i) + ".trace.json")).string();
        write_atomic(path, [&](std::ostream& o) { o << trace.str(); });
        spdlog::info("{}: one profiled step -> {}", subjects[i].name, path);
      }
    }
    if (!a->out.empty()) {
      write_json_file(a->out, result);
    }
    return 0;
  };
}

}  // namespace moejet::cli
