#pragma once
// Subcommands of the moejet CLI. Each registers its flags on a CLI11 subcommand and returns the
// function to run once parsing succeeded.

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "moejet/core/json_util.h"

namespace moejet::cli {

using Runner = std::function<int()>;

Runner add_train_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_predict_command(CLI::App& app);
Runner add_info_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_recycle_command(CLI::App& app);
Runner add_superclasses_command(CLI::App& app);
Runner add_report_command(CLI::App& app);
Runner add_convert_command(CLI::App& app);
Runner add_export_command(CLI::App& app);

/// `moejet convert`: writes checkpoint `in` to `out` in layout `to` (jetpack, timm, moejet).
int convert_checkpoint(const std::string& in, const std::string& out, const std::string& to, const std::string& model,
                       const std::vector<std::string>& sets);

/// Remembers the process's command line (for --nproc, which re-executes it per worker).
void set_command_line(int argc, char** argv);
/// Starts `nproc` copies of this command as a local data-parallel job; returns the first
/// failing worker's exit code (the others are then stopped), or 0.
int launch_local_workers(int nproc);

/// Applies "a.b.c=value" overrides to a JSON config; the value is parsed as JSON when it can be
/// (numbers, booleans, lists) and taken as a string otherwise.
void apply_overrides(json& config, const std::vector<std::string>& overrides);

/// Loads a model config: a preset name, a JSON file with a model object, or a full training
/// config (its "model" section).
json load_model_json(const std::string& spec);
/// Whether a --model / --config value names a file (exists, has a '/', or ends in .json) rather
/// than a preset.
bool names_a_file(const std::string& spec);
/// `path` if it exists, else the repository's file of that relative path (examples name
/// configs/...); ConfigError "no such file" otherwise.
std::string resolve_config_path(const std::string& path);

}  // namespace moejet::cli
