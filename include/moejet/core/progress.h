#pragma once
// Progress reporting for long loops: a redrawn one-line bar with rate and ETA when stderr is a
// terminal, and plain log lines at a bounded rate otherwise (CI logs stay readable).

#include <chrono>
#include <cstdint>
#include <string>

namespace moejet {

class Progress {
 public:
  /// `total` units of work (0 = unknown); `unit` names them in the rate ("img", "step").
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();
  /// Adds `n` done units; `status` is appended to the line (e.g. "loss 0.42").
  void advance(int64_t n, const std::string& status = "");
  /// Ends the bar (prints the final line once).
  void finish(const std::string& status = "");
  double rate() const;  ///< units per second so far
  double elapsed() const;
  /// Force plain-line mode (tests) or quiet mode.
  static void set_quiet(bool quiet);

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
