#include "moejet/train/metrics_log.h"

#include <filesystem>
#include <sstream>
#include <vector>

#include "moejet/core/fs.h"

namespace moejet::train {

MetricsLog::MetricsLog(const std::string& path, int64_t keep_until_step) : path_(path) {
  std::filesystem::path p(path);
  if (p.has_parent_path()) {
    std::filesystem::create_directories(p.parent_path());
  }
  if (file_exists(path)) {
    if (keep_until_step >= 0) {
      std::ifstream in(path);
      std::string line, kept;
      while (std::getline(in, line)) {
        try {
          auto j = json::parse(line);
          if (j.value("step", int64_t{0}) <= keep_until_step) {
            kept += line + "\n";
          }
        } catch (const json::exception&) {
          // A torn last line of a killed run: drop it.
        }
      }
      write_atomic(path, [&](std::ostream& out) { out << kept; });
    } else {
      // A fresh run in an old directory starts a fresh log.
      std::filesystem::remove(path);
    }
  }
  out_.open(path, std::ios::app);
  if (!out_) {
    throw Error(fmt::format("{}: cannot open metrics log", path));
  }
}

void MetricsLog::write(const json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
}

}  // namespace moejet::train
