#pragma once
// Metrics as JSON lines (one object per line, each with "event" and "step"), the format the
// report and plotting tools read. Lines are flushed as written so a crashed run keeps its log.

#include <cstdint>
#include <fstream>
#include <string>

#include "moejet/core/json_util.h"

namespace moejet::train {

class MetricsLog {
 public:
  /// Opens `path` for appending. With keep_until_step >= 0 (a resume), lines of a previous run
  /// with a step beyond it are dropped first, so the log reads as one uninterrupted run.
  explicit MetricsLog(const std::string& path, int64_t keep_until_step = -1);
  void write(const json& record);
  const std::string& path() const {
    return path_;
  }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace moejet::train
