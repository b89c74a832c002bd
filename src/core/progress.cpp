#include "moejet/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

namespace moejet {

namespace {

class SilentTask : public ProgressTask {
 public:
  void advance(int64_t, const std::string&) override {}
  void finish(const std::string&) override {}
};

}  // namespace

std::unique_ptr<ProgressTask> start_progress(ProgressReporter* reporter, const std::string& label, int64_t total,
                                             const std::string& unit) {
  if (reporter == nullptr) {
    return std::make_unique<SilentTask>();
  }
  return reporter->start(label, total, unit);
}

std::unique_ptr<ProgressTask> TerminalProgress::start(const std::string& label, int64_t total,
                                                      const std::string& unit) {
  return std::make_unique<ProgressBar>(label, total, unit);
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(::isatty(2) != 0) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  if (!finished_ && done_ > 0 && tty_) {
    std::fputs("\n", stderr);
  }
}

double ProgressBar::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double ProgressBar::rate() const {
  double e = elapsed();
  return e > 0 ? static_cast<double>(done_) / e : 0.0;
}

std::string format_duration(double s) {
  if (s < 0 || s != s) {
    return "?";
  }
  auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) {
    return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  }
  if (t >= 60) {
    return fmt::format("{}m{:02d}s", t / 60, t % 60);
  }
  return fmt::format("{}s", t);
}

void ProgressBar::advance(int64_t n, const std::string& status) {
  done_ += n;
  if (!status.empty()) {
    status_ = status;
  }
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  // Redraw a terminal bar at most 10 times a second; print a plain line every 30 s otherwise.
  if ((tty_ && since >= 0.1) || (!tty_ && since >= 30.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish(const std::string& status) {
  if (finished_) {
    return;
  }
  if (!status.empty()) {
    status_ = status;
  }
  draw(true);
  finished_ = true;
}

void ProgressBar::draw(bool final) {
  double r = rate();
  std::string eta;
  if (total_ > 0 && !final) {
    eta = fmt::format(" ETA {}", r > 0 ? format_duration(static_cast<double>(total_ - done_) / r) : "?");
  }
  std::string count = total_ > 0 ? fmt::format("{}/{}", done_, total_) : fmt::format("{}", done_);
  std::string bar;
  if (tty_ && total_ > 0) {
    const int width = 24;
    int filled = static_cast<int>(width * static_cast<double>(done_) / static_cast<double>(total_));
    filled = std::min(std::max(filled, 0), width);
    bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
  }
  std::string line =
      fmt::format("{} {}{} {:.1f} {}/s {}{}{}", label_, bar, count, r, unit_,
                  final ? "in " + format_duration(elapsed()) : "", eta, status_.empty() ? "" : " | " + status_);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace moejet
