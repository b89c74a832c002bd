#pragma once
// Progress of long loops (training epochs, evaluation, unit statistics). The library reports to a
// ProgressReporter that the application provides and never writes to the terminal itself: the CLI
// hands in a TerminalProgress (a redrawn one-line bar with rate and ETA when stderr is a terminal,
// plain lines at a bounded rate otherwise, so CI logs stay readable), tests and embedding programs
// hand in nothing, and a second process of a data-parallel run stays silent by passing nothing on.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace moejet {

/// One loop's progress.
class ProgressTask {
 public:
  virtual ~ProgressTask() = default;
  /// Adds `n` done units; `status` is shown with them (e.g. "loss 0.42").
  virtual void advance(int64_t n, const std::string& status = "") = 0;
  /// Ends the loop (the final line, once).
  virtual void finish(const std::string& status = "") = 0;
};

/// Where a library call reports its loops.
class ProgressReporter {
 public:
  virtual ~ProgressReporter() = default;
  /// A loop of `total` units (0: unknown), named `unit` in rates ("img", "batch").
  virtual std::unique_ptr<ProgressTask> start(const std::string& label, int64_t total, const std::string& unit) = 0;
};

/// `reporter`'s task, or one that shows nothing when `reporter` is null, so that loops report
/// unconditionally.
std::unique_ptr<ProgressTask> start_progress(ProgressReporter* reporter, const std::string& label, int64_t total,
                                             const std::string& unit);

/// The command line's reporter: bars on stderr.
class TerminalProgress : public ProgressReporter {
 public:
  std::unique_ptr<ProgressTask> start(const std::string& label, int64_t total, const std::string& unit) override;
};

/// A bar on stderr, redrawn in place on a terminal, a plain line every 30 s otherwise.
class ProgressBar : public ProgressTask {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "it");
  ~ProgressBar() override;
  void advance(int64_t n, const std::string& status = "") override;
  void finish(const std::string& status = "") override;
  double rate() const;  ///< units per second so far
  double elapsed() const;

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  int64_t total_, done_ = 0;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

/// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace moejet
