#include "moejet/report/run_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

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
      if (p.epoch < 0) {
        r.start_top1 = p.top1;
        continue;
      }
      r.best_top1 = std::max(r.best_top1, p.top1);
      r.final_top1 = p.top1;
      r.final_router_top1 = p.router_top1;
    } else if (event == "train") {
      if (j.contains("loss")) {
        r.losses.emplace_back(j.value("step", int64_t{0}), j.value("loss", 0.0));
      }
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

struct Stat {
  double mean = -1.0, sd = 0.0;
  size_t n = 0;
};

// Mean and sample sd of the values that were measured (>= 0).
Stat stat_of(const std::vector<double>& values) {
  Stat s;
  std::vector<double> v;
  for (double x : values) {
    if (x >= 0) {
      v.push_back(x);
    }
  }
  s.n = v.size();
  if (v.empty()) {
    return s;
  }
  double sum = 0;
  for (double x : v) {
    sum += x;
  }
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) {
    ss += (x - s.mean) * (x - s.mean);
  }
  s.sd = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

std::string fmt_stat(const Stat& s) {
  if (s.n == 0) {
    return "–";
  }
  return s.n > 1 ? fmt::format("{:.2f} ± {:.2f}", s.mean, s.sd) : fmt::format("{:.2f}", s.mean);
}

// The runs of one method (its seeds), in the order given.
struct Method {
  std::string label;
  std::vector<const RunSummary*> runs;
  template <class F>
  Stat over(F f) const {
    std::vector<double> v;
    for (const auto* r : runs) {
      v.push_back(f(*r));
    }
    return stat_of(v);
  }
};

std::vector<Method> group_by_label(const std::vector<RunSummary>& runs) {
  std::vector<Method> methods;
  for (const auto& r : runs) {
    auto it = std::find_if(methods.begin(), methods.end(), [&](const Method& m) { return m.label == r.label; });
    if (it == methods.end()) {
      methods.push_back({r.label, {}});
      it = methods.end() - 1;
    }
    it->runs.push_back(&r);
  }
  return methods;
}

// Mean line and +-1 sd band over a method's seeds, point by point, over the points every seed has
// (the same schedule gives the same steps).
Series mean_series(const Method& m, const std::function<std::vector<std::pair<double, double>>(const RunSummary&)>& f) {
  Series s{m.label, {}, {}, {}, {}};
  std::vector<std::vector<std::pair<double, double>>> per_run;
  size_t n = std::numeric_limits<size_t>::max();
  for (const auto* r : m.runs) {
    per_run.push_back(f(*r));
    n = std::min(n, per_run.back().size());
  }
  if (per_run.empty()) {
    return s;
  }
  for (size_t i = 0; i < n; ++i) {
    std::vector<double> ys;
    for (const auto& pts : per_run) {
      ys.push_back(pts[i].second);
    }
    const Stat st = stat_of(ys);
    s.x.push_back(per_run[0][i].first);
    s.y.push_back(st.mean);
    if (m.runs.size() > 1) {
      s.lo.push_back(st.mean - st.sd);
      s.hi.push_back(st.mean + st.sd);
    }
  }
  return s;
}

struct LoadGroup {
  std::string name;
  int64_t first = 0, experts = 0;
  double share = 1.0, max_over_mean = 0, min_over_mean = 0, cv = 0;
};

// The expert groups of one block's stats; logs without "groups" hold one group of all experts.
std::vector<LoadGroup> load_groups(const json& block) {
  std::vector<LoadGroup> out;
  if (block.contains("groups")) {
    for (const auto& g : block["groups"]) {
      out.push_back({g.value("name", ""), g.value("first", int64_t{0}), g.value("experts", int64_t{0}),
                     g.value("share", 0.0), g.value("load_max_over_mean", 0.0), g.value("load_min_over_mean", 0.0),
                     g.value("load_cv", 0.0)});
    }
    return out;
  }
  const auto n = block.contains("load") ? static_cast<int64_t>(block["load"].size()) : int64_t{0};
  out.push_back({"experts", 0, n, 1.0, block.value("load_max_over_mean", 0.0), block.value("load_min_over_mean", 0.0),
                 block.value("load_cv", 0.0)});
  return out;
}

}  // namespace

std::string write_report(const std::vector<RunSummary>& runs, const std::string& out_dir, const std::string& title,
                         const std::string& notes) {
  std::filesystem::create_directories(out_dir);
  const auto methods = group_by_label(runs);
  size_t max_seeds = 0;
  for (const auto& m : methods) {
    max_seeds = std::max(max_seeds, m.runs.size());
  }
  const std::string band = max_seeds > 1 ? " (mean, band: ±1 sd over seeds)" : "";
  // Convergence: test top-1 against optimizer steps.
  std::vector<Series> curves, losses;
  for (const auto& m : methods) {
    curves.push_back(mean_series(m, [](const RunSummary& r) {
      std::vector<std::pair<double, double>> pts;
      for (const auto& p : r.evals) {
        pts.emplace_back(static_cast<double>(p.step), p.top1);
      }
      return pts;
    }));
    losses.push_back(mean_series(m, [](const RunSummary& r) {
      std::vector<std::pair<double, double>> pts;
      for (const auto& [step, loss] : r.losses) {
        pts.emplace_back(static_cast<double>(step), loss);
      }
      return pts;
    }));
  }
  write_atomic(out_dir + "/accuracy.svg", [&](std::ostream& o) {
    o << line_plot_svg(curves, {"Test top-1 during training" + band, "optimizer step", "top-1 (%)"});
  });
  write_atomic(out_dir + "/loss.svg", [&](std::ostream& o) {
    o << line_plot_svg(losses, {"Training loss" + band, "optimizer step", "loss (log window mean)"});
  });
  // Utilisation: per-expert load in the last MoE block at the last logged step (first seed), one
  // panel per method, each group of experts (SpheroMoE: core, universal) in its own colour.
  std::vector<BarPanel> panels;
  for (const auto& m : methods) {
    const auto& r = *m.runs.front();
    if (r.last_moe_stats.is_array() && !r.last_moe_stats.empty() && r.last_moe_stats.back().contains("load")) {
      const auto& last = r.last_moe_stats.back();
      const auto load = last["load"].get<std::vector<double>>();
      BarPanel p{fmt::format("{}: block {} ({})", m.label, last.value("block", int64_t{-1}), last.value("kind", "")),
                 {}};
      for (const auto& g : load_groups(last)) {
        Series s{
            fmt::format("{} ({} experts, {:.1f}% of the mass)", g.name, g.experts, 100.0 * g.share), {}, {}, {}, {}};
        for (int64_t i = g.first; i < g.first + g.experts && i < static_cast<int64_t>(load.size()); ++i) {
          s.x.push_back(static_cast<double>(i));
          // 1 = an even share within the group
          s.y.push_back(g.share > 0 ? load[static_cast<size_t>(i)] * static_cast<double>(g.experts) / g.share : 0.0);
        }
        p.series.push_back(s);
      }
      panels.push_back(p);
    }
  }
  write_atomic(out_dir + "/expert_load.svg", [&](std::ostream& o) {
    o << bar_panels_svg(panels,
                        {"Expert load in the last MoE block", "expert", "load / group mean (1 = even)", 760, 320});
  });

  std::string md = fmt::format("# {}\n\n", title);
  if (!notes.empty()) {
    md += notes + "\n\n";
  }
  md +=
      "| run | seeds | init | MoE | Param (M) | FLOPs (G) | top-1 before training | final top-1 | best top-1 | "
      "router top-1 | train img/s |\n";
  md += "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& m : methods) {
    const auto& r = *m.runs.front();
    md += fmt::format("| {} | {} | {} | {} | {:.2f} | {:.4f} | {} | {} | {} | {} | {:.0f} |\n", m.label, m.runs.size(),
                      r.init.empty() ? "random" : std::filesystem::path(r.init).filename().string(),
                      r.moe_kind.empty() ? "dense" : r.moe_kind, r.params / 1e6, r.flops / 1e9,
                      fmt_stat(m.over([](const RunSummary& x) { return x.start_top1; })),
                      fmt_stat(m.over([](const RunSummary& x) { return x.final_top1; })),
                      fmt_stat(m.over([](const RunSummary& x) { return x.best_top1; })),
                      fmt_stat(m.over([](const RunSummary& x) { return x.final_router_top1; })),
                      m.over([](const RunSummary& x) { return x.img_per_s; }).mean);
  }
  md += "\nFLOPs are multiply-accumulates per image (fvcore convention, as the papers' tables).";
  if (max_seeds > 1) {
    md += " Accuracies are mean ± sample sd over the seeds.";
  }
  md += "\n\n## Convergence\n\n![test top-1 against optimizer steps](accuracy.svg)\n\n";
  // Columns: the evaluations by epoch (-1: before training), over every run.
  std::vector<int64_t> epochs;
  for (const auto& r : runs) {
    for (const auto& p : r.evals) {
      if (std::find(epochs.begin(), epochs.end(), p.epoch) == epochs.end()) {
        epochs.push_back(p.epoch);
      }
    }
  }
  std::sort(epochs.begin(), epochs.end());
  md += "| run |";
  for (int64_t e : epochs) {
    md += e < 0 ? std::string(" start |") : fmt::format(" ep {} |", e + 1);
  }
  md += "\n|---|";
  for (size_t i = 0; i < epochs.size(); ++i) {
    md += "---:|";
  }
  md += "\n";
  for (const auto& m : methods) {
    md += "| " + m.label + " |";
    for (int64_t e : epochs) {
      md += " " + fmt_stat(m.over([&](const RunSummary& r) {
              for (const auto& p : r.evals) {
                if (p.epoch == e) {
                  return p.top1;
                }
              }
              return -1.0;
            })) +
            " |";
    }
    md += "\n";
  }
  md += "\n## Training loss\n\n![training loss against optimizer steps](loss.svg)\n";
  md += "\n## Expert utilisation\n\n";
  bool any = false;
  for (const auto& m : methods) {
    const auto& r = *m.runs.front();
    if (!r.last_moe_stats.is_array())
      continue;
    if (!any) {
      md += fmt::format(
          "At the last logged training step{}. Load is each expert's share of the routing mass (Soft MoE / "
          "SpheroMoE: combine weights; top-k and per-image: assignments). Experts of one group (SpheroMoE: "
          "core, universal) are compared among themselves: max/mean 1 and CV 0 are an even share within the "
          "group.\n\n| run | block | kind | experts | share of the mass | load max/mean | load min/mean | load CV | "
          "dispatch entropy |\n|---|---:|---|---|---:|---:|---:|---:|---:|\n",
          max_seeds > 1 ? " of each method's first seed" : "");
      any = true;
    }
    for (const auto& b : r.last_moe_stats) {
      for (const auto& g : load_groups(b)) {
        md += fmt::format("| {} | {} | {} | {} {} | {:.1f}% | {:.2f} | {:.2f} | {:.2f} | {:.3f} |\n", m.label,
                          b.value("block", int64_t{-1}), b.value("kind", ""), g.name, g.experts, 100.0 * g.share,
                          g.max_over_mean, g.min_over_mean, g.cv, b.value("dispatch_entropy", 0.0));
      }
    }
  }
  md += any ? "\n![per-expert load](expert_load.svg)\n" : "No MoE runs.\n";
  const std::string path = out_dir + "/report.md";
  write_atomic(path, [&](std::ostream& o) { o << md; });
  return path;
}

}  // namespace moejet::report
