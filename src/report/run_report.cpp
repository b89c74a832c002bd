#include "moejet/report/run_report.h"

#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/models/model_config.h"
#include "moejet/report/svg_plot.h"
#include "moejet/train/train_config.h"

namespace moejet::report {

RunSummary load_run(const std::string& label, const std::string& dir) {
  RunSummary r;
  r.label = label;
  r.dir = dir;
  const std::string config_path = dir + "/config.json", metrics_path = dir + "/metrics.jsonl";
  check<DataError>(file_exists(config_path), "{}: no config.json (is this a moejet train run directory?)", dir);
  check<DataError>(file_exists(metrics_path), "{}: no metrics.jsonl", dir);
  auto cfg = train::train_config_from_json(read_json_file(config_path));
  r.init = cfg.train.init;
  r.moe_kind = cfg.model.moe().enabled() ? cfg.model.moe().type() : "";
  {
    torch::NoGradGuard ng;
    auto model = models::make_model(cfg.model);
    r.params = static_cast<double>(models::count_parameters(*model));
    r.flops = models::total_macs(*model);
  }
  std::ifstream in(metrics_path);
  std::string line;
  double rate_sum = 0;
  int64_t rate_n = 0, line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty())
      continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw DataError(fmt::format("{}:{}: not JSON ({})", metrics_path, line_no, e.what()));
    }
    const auto event = j.value("event", "");
    if (event == "eval") {
      EvalPoint p;
      p.step = j.value("step", int64_t{0});
      p.epoch = j.value("epoch", int64_t{0});
      p.top1 = j.value("top1", 0.0);
      p.router_top1 = j.value("router_top1", -1.0);
      r.evals.push_back(p);
      r.best_top1 = std::max(r.best_top1, p.top1);
      r.final_top1 = p.top1;
      r.final_router_top1 = p.router_top1;
    } else if (event == "train") {
      rate_sum += j.value("img_per_s", 0.0);
      rate_n += 1;
      if (j.contains("moe")) {
        r.last_moe_stats = j["moe"];
      }
    }
  }
  r.img_per_s = rate_n > 0 ? rate_sum / static_cast<double>(rate_n) : 0.0;
  return r;
}

namespace {

std::string pct(double v) {
  return v < 0 ? std::string("–") : fmt::format("{:.2f}", v);
}

}  // namespace

std::string write_report(const std::vector<RunSummary>& runs, const std::string& out_dir, const std::string& title,
                         const std::string& notes) {
  std::filesystem::create_directories(out_dir);
  // Convergence: test top-1 against optimizer steps.
  std::vector<Series> curves;
  for (const auto& r : runs) {
    Series s{r.label, {}, {}};
    for (const auto& p : r.evals) {
      s.x.push_back(static_cast<double>(p.step));
      s.y.push_back(p.top1);
    }
    curves.push_back(s);
  }
  write_atomic(out_dir + "/accuracy.svg", [&](std::ostream& o) {
    o << line_plot_svg(curves, {"Test top-1 during training", "optimizer step", "top-1 (%)"});
  });
  // Utilisation: per-expert load in the last MoE block at the last logged step.
  std::vector<Series> loads;
  for (const auto& r : runs) {
    if (r.last_moe_stats.is_array() && !r.last_moe_stats.empty() && r.last_moe_stats.back().contains("load")) {
      const auto& last = r.last_moe_stats.back();
      Series s{fmt::format("{} (block {})", r.label, last.value("block", int64_t{-1})), {}, {}};
      auto load = last["load"].get<std::vector<double>>();
      const double mean = load.empty() ? 1.0 : 1.0 / static_cast<double>(load.size());
      for (size_t i = 0; i < load.size(); ++i) {
        s.x.push_back(static_cast<double>(i));
        s.y.push_back(load[i] / mean);  // 1 = perfectly even
      }
      loads.push_back(s);
    }
  }
  write_atomic(out_dir + "/expert_load.svg", [&](std::ostream& o) {
    o << bar_plot_svg(loads, {"Expert load in the last MoE block (1 = even share)", "expert", "load / mean"});
  });

  std::string md = fmt::format("# {}\n\n", title);
  if (!notes.empty()) {
    md += notes + "\n\n";
  }
  md += "| run | init | MoE | Param (M) | FLOPs (G) | best top-1 | final top-1 | router top-1 | train img/s |\n";
  md += "|---|---|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : runs) {
    md += fmt::format("| {} | {} | {} | {:.2f} | {:.4f} | {} | {} | {} | {:.0f} |\n", r.label,
                      r.init.empty() ? "random" : std::filesystem::path(r.init).filename().string(),
                      r.moe_kind.empty() ? "dense" : r.moe_kind, r.params / 1e6, r.flops / 1e9, pct(r.best_top1),
                      pct(r.final_top1), pct(r.final_router_top1), r.img_per_s);
  }
  md += "\nFLOPs are multiply-accumulates per image (fvcore convention, as the papers' tables).\n\n";
  md += "## Convergence\n\n![test top-1 against optimizer steps](accuracy.svg)\n\n";
  md += "| run |";
  size_t max_evals = 0;
  for (const auto& r : runs)
    max_evals = std::max(max_evals, r.evals.size());
  for (size_t i = 0; i < max_evals; ++i)
    md += fmt::format(" ep {} |", i + 1);
  md += "\n|---|";
  for (size_t i = 0; i < max_evals; ++i)
    md += "---:|";
  md += "\n";
  for (const auto& r : runs) {
    md += "| " + r.label + " |";
    for (size_t i = 0; i < max_evals; ++i) {
      md += i < r.evals.size() ? fmt::format(" {:.2f} |", r.evals[i].top1) : std::string(" |");
    }
    md += "\n";
  }
  md += "\n## Expert utilisation\n\n";
  bool any = false;
  for (const auto& r : runs) {
    if (!r.last_moe_stats.is_array())
      continue;
    if (!any) {
      md +=
          "At the last logged training step. Load is each expert's share of the routing mass (Soft MoE / "
          "SpheroMoE: combine weights; top-k and per-image: assignments); max/mean 1 and CV 0 are perfect "
          "balance.\n\n| run | block | kind | load max/mean | load min/mean | load CV | dispatch entropy |\n"
          "|---|---:|---|---:|---:|---:|---:|\n";
      any = true;
    }
    for (const auto& b : r.last_moe_stats) {
      md += fmt::format("| {} | {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.3f} |\n", r.label,
                        b.value("block", int64_t{-1}), b.value("kind", ""), b.value("load_max_over_mean", 0.0),
                        b.value("load_min_over_mean", 0.0), b.value("load_cv", 0.0), b.value("dispatch_entropy", 0.0));
    }
  }
  md += any ? "\n![per-expert load](expert_load.svg)\n" : "No MoE runs.\n";
  const std::string path = out_dir + "/report.md";
  write_atomic(path, [&](std::ostream& o) { o << md; });
  return path;
}

}  // namespace moejet::report
