#include <spdlog/spdlog.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/report/run_report.h"

namespace moejet::cli {

namespace {

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out = "report", title = "moejet runs", notes;
};

}  // namespace

Runner add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  auto* sub = app.add_subcommand("report", "Markdown + SVG report of training runs: accuracy, curves, utilisation");
  sub->add_option("-r,--run", a->runs, "LABEL=RUN_DIR (repeat; order is kept)")->required();
  sub->add_option("-o,--out", a->out, "output directory")->capture_default_str();
  sub->add_option("--title", a->title)->capture_default_str();
  sub->add_option("--notes", a->notes, "Markdown file whose text goes under the title");
  return [a]() {
    std::vector<report::RunSummary> runs;
    for (const auto& spec : a->runs) {
      auto eq = spec.find('=');
      check<ConfigError>(eq != std::string::npos && eq > 0, "--run '{}': expected LABEL=RUN_DIR", spec);
      runs.push_back(report::load_run(spec.substr(0, eq), spec.substr(eq + 1)));
    }
    std::string notes;
    if (!a->notes.empty()) {
      auto bytes = read_file_bytes(a->notes);
      notes.assign(bytes.begin(), bytes.end());
    }
    auto path = report::write_report(runs, a->out, a->title, notes);
    spdlog::info("report: {}", path);
    return 0;
  };
}

}  // namespace moejet::cli
