#pragma once
// The report of a set of training runs, made from what each run directory holds (config.json,
// metrics.jsonl): an accuracy table with parameters and FLOPs per image (the papers' columns),
// test accuracy against optimizer steps (MoE Jetpack's convergence figure), the training loss, and
// expert utilisation of the MoE runs (per-block load balance and the last logged per-expert load).
// Runs given the same label are seeds of one method: the table gives mean +- sd over them and the
// figures a mean line with a +-1 sd band. Output: report.md beside accuracy.svg, loss.svg and
// expert_load.svg, written atomically.

#include <string>
#include <vector>

#include "moejet/core/json_util.h"

namespace moejet::report {

struct EvalPoint {
  int64_t step = 0;
  int64_t epoch = 0;
  double top1 = 0.0;
  double router_top1 = -1.0;
};

struct RunSummary {
  std::string label, dir;
  std::string init;                                ///< checkpoint the run started from ("" = random init)
  std::string moe_kind;                            ///< "" for dense
  double params = 0.0;                             ///< trainable parameters
  double flops = 0.0;                              ///< multiply-accumulates per image
  std::vector<EvalPoint> evals;                    ///< in log order; epoch -1 is the evaluation before training
  std::vector<std::pair<int64_t, double>> losses;  ///< (step, mean training loss of the log window)
  double best_top1 = -1.0, final_top1 = -1.0, final_router_top1 = -1.0;
  double start_top1 = -1.0;  ///< before the first step (train.eval_at_start), else -1
  double img_per_s = 0.0;    ///< mean training throughput over the logged windows
  json last_moe_stats;       ///< the last "moe" array of the training log (null for dense)
};

/// Reads a run directory written by `moejet train`; throws DataError naming the file when
/// config.json or metrics.jsonl is missing or unreadable.
RunSummary load_run(const std::string& label, const std::string& dir);

/// Writes report.md, accuracy.svg, loss.svg and expert_load.svg into `out_dir`; returns
/// report.md's path. Runs sharing a label are aggregated (in the order labels first appear).
std::string write_report(const std::vector<RunSummary>& runs, const std::string& out_dir, const std::string& title,
                         const std::string& notes = "");

}  // namespace moejet::report
