// moejet: dense vision checkpoints -> Mixture-of-Experts models, from the command line.

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/blas.h"
#include "moejet/core/error.h"
#include "moejet/core/heap.h"
#include "moejet/core/system.h"

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
  app.add_option("--threads", threads, "intra-op CPU threads (0 = libtorch default)")->capture_default_str();

  // Each add_*_command adds one subcommand; remember which runner belongs to which.
  std::vector<std::pair<CLI::App*, moejet::cli::Runner>> commands;
  for (auto add : {moejet::cli::add_train_command, moejet::cli::add_eval_command,
                   moejet::cli::add_info_command, moejet::cli::add_bench_command,
                   moejet::cli::add_recycle_command, moejet::cli::add_superclasses_command,
                   moejet::cli::add_report_command, moejet::cli::add_convert_command}) {
    auto runner = add(app);
    commands.emplace_back(app.get_subcommands({}).back(), std::move(runner));
  }

  CLI11_PARSE(app, argc, argv);
  const bool computes = !(app.got_subcommand("info") || app.got_subcommand("report"));
  const std::string coretype = computes ? moejet::openblas_coretype_needed() : "";
  const bool spin = computes && moejet::openblas_thread_timeout_unset();
  if (spin || !coretype.empty()) {
    // OpenBLAS reads its worker spin timeout and its kernel choice only when it loads, before
    // main: set them and start this program afresh (same pid, arguments and descriptors). See
    // core/blas.h for the figures. Values the user set are kept, so OPENBLAS_THREAD_TIMEOUT=28
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
  if (threads > 0) {
    torch::set_num_threads(threads);
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
