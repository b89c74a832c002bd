// moejet: dense vision checkpoints -> Mixture-of-Experts models, from the command line.

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/blas_runtime.h"
#include "moejet/core/error.h"
#include "moejet/core/heap.h"
#include "moejet/core/system.h"

namespace {

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cur = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
      prev = cur;
    }
  }
  return row[b.size()];
}

// The closest of `names` to `word`, if it is close enough to be what was meant.
std::string closest(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& n : names) {
    const size_t d = edit_distance(word, n);
    if (d < best_d || (n.rfind(word, 0) == 0 && best.empty())) {
      best_d = d;
      best = n;
    }
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  moejet::keep_freed_memory_in_process();
  moejet::cli::set_command_line(argc, argv);
  CLI::App app{"moejet: turn dense pretrained vision models into Mixture-of-Experts models and fine-tune them"};
  app.set_version_flag("--version", std::string("moejet ") + MOEJET_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  int threads = 0;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--threads", threads, "intra-op CPU threads, also the matrix products' (0 = one per CPU)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));

  // Each add_*_command adds one subcommand; remember which runner belongs to which.
  std::vector<std::pair<CLI::App*, moejet::cli::Runner>> commands;
  for (auto add : {moejet::cli::add_train_command, moejet::cli::add_eval_command, moejet::cli::add_predict_command,
                   moejet::cli::add_info_command, moejet::cli::add_bench_command, moejet::cli::add_recycle_command,
                   moejet::cli::add_superclasses_command, moejet::cli::add_report_command,
                   moejet::cli::add_convert_command, moejet::cli::add_export_command}) {
    auto runner = add(app);
    commands.emplace_back(app.get_subcommands({}).back(), std::move(runner));
  }

  // Logs go to stderr, so that what a command prints on stdout (info --json, eval) stays clean.
  spdlog::set_default_logger(spdlog::stderr_color_mt("moejet"));
  std::vector<std::string> names;
  for (auto& [sub, runner] : commands) {
    sub->fallthrough();  // --log-level and --threads also work after the subcommand
    names.push_back(sub->get_name());
  }
  // The first word that is not an option must be a command; CLI11 alone would say "a subcommand
  // is required", or show the main help for `moejet predict --help`.
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') {
      if (word == "--log-level" || word == "--threads")
        ++i;  // their values
      continue;
    }
    if (std::find(names.begin(), names.end(), word) == names.end()) {
      const auto near = closest(word, names);
      std::cerr << "moejet: unknown command '" << word << "'" << (near.empty() ? "" : "; did you mean '" + near + "'?")
                << "\n"
                << "commands: " << fmt::format("{}", fmt::join(names, ", ")) << "\n";
      return 2;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    // An unknown flag: suggest the subcommand's closest option.
    std::vector<std::string> flags;
    for (auto& [sub, runner] : commands) {
      if (!sub->parsed())
        continue;
      for (const auto* opt : sub->get_options()) {
        for (const auto& n : opt->get_lnames())
          flags.push_back("--" + n);
      }
    }
    std::string hint;
    for (int i = 1; i < argc && hint.empty(); ++i) {
      const std::string word = argv[i];
      if (word.rfind("--", 0) == 0 &&
          std::find(flags.begin(), flags.end(), word.substr(0, word.find('='))) == flags.end()) {
        if (auto near = closest(word.substr(0, word.find('=')), flags); !near.empty()) {
          hint = "did you mean " + near + "?";
        }
      }
    }
    const int code = app.exit(e);
    if (!hint.empty())
      std::cerr << hint << "\n";
    return code;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const bool computes = !(app.got_subcommand("info") || app.got_subcommand("report"));
  const std::string coretype = computes ? moejet::openblas_coretype_needed() : "";
  const bool spin = computes && moejet::openblas_thread_timeout_unset();
  if (spin || !coretype.empty()) {
    // OpenBLAS reads its worker spin timeout and its kernel choice only when it loads, before
    // main: set them and start this program afresh (same pid, arguments and descriptors). See
    // core/blas_runtime.h for the figures. Values the user set are kept, so OPENBLAS_THREAD_TIMEOUT=28
    // restores OpenBLAS's default spin and OPENBLAS_CORETYPE its kernel choice.
    if (spin) {
      setenv("OPENBLAS_THREAD_TIMEOUT", moejet::kOpenblasThreadTimeout, 1);
    }
    if (!coretype.empty()) {
      setenv("OPENBLAS_CORETYPE", coretype.c_str(), 1);
    }
    execv("/proc/self/exe", argv);
    // exec failed: go on as loaded, reported as such
    if (spin) {
      unsetenv("OPENBLAS_THREAD_TIMEOUT");
    }
    if (!coretype.empty()) {
      unsetenv("OPENBLAS_CORETYPE");
    }
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  if (computes) {
    moejet::set_compute_threads(threads);
  }
  auto info = moejet::system_info();
  spdlog::info("{}", info.summary());
  if (info.reference_blas) {
    spdlog::warn(
        "libblas.so.3 is the reference BLAS (~70x slower GEMM than OpenBLAS): install "
        "libopenblas0-pthread (scripts/setup.sh does) or point the libblas.so.3 alternative at it");
  }
  try {
    for (auto& [sub, runner] : commands) {
      if (sub->parsed()) {
        return runner();
      }
    }
  } catch (const moejet::Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  } catch (const c10::Error& e) {
    spdlog::error("{}", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
