#include "moejet/train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"

namespace moejet::train {

namespace fs = std::filesystem;

namespace {

// The files that make a folder a run; an overwrite removes exactly these (and state files).
const char* const kRunFiles[] = {"last.safetensors", "best.safetensors", "last.state.pt",
                                 "metrics.jsonl",    "config.json",      "eval.json"};

bool is_state_file(const std::string& name) {
  static const std::regex re(R"(last\.state-\d+\.pt)");
  return std::regex_match(name, re);
}

bool is_temp_file(const std::string& name) {
  static const std::regex re(R"(.*\.tmp\.\d+)");
  return std::regex_match(name, re);
}

}  // namespace

std::string default_run_dir(const std::string& name) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
  std::string base = "runs/" + (name.empty() ? std::string("train") : name) + "-" + stamp;
  // Two runs started in the same second get distinct folders.
  std::string dir = base;
  for (int i = 2; fs::exists(dir); ++i)
    dir = fmt::format("{}-{}", base, i);
  return dir;
}

bool RunDir::holds_run(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return false;
  for (const auto* f : kRunFiles) {
    if (fs::exists(dir + "/" + f, ec))
      return true;
  }
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (is_state_file(e.path().filename().string()))
      return true;
  }
  return false;
}

RunDir::RunDir(std::string dir, RunDirMode mode, bool writer) : dir_(std::move(dir)) {
  check<ConfigError>(!dir_.empty(), "train.out_dir: no run folder given");
  if (!writer) {
    return;
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  check<Error>(!ec && fs::is_directory(dir_), "{}: cannot create the run folder: {}", dir_, ec.message());
  const std::string lock = file(".lock");
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  check<Error>(lock_fd_ >= 0, "{}: cannot open: {}", lock, std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string holder;
    std::ifstream(lock) >> holder;
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw Error(fmt::format("{}: another training is writing to this folder{}; wait for it, or give another --out",
                            dir_, holder.empty() ? "" : " (pid " + holder + ")"));
  }
  // Ours now: record the pid for the message above, and clear what killed writers left behind.
  if (::ftruncate(lock_fd_, 0) == 0) {
    const std::string pid = std::to_string(::getpid()) + "\n";
    [[maybe_unused]] auto n = ::pwrite(lock_fd_, pid.data(), pid.size(), 0);
  }
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const auto name = e.path().filename().string();
    if (is_temp_file(name)) {
      spdlog::info("{}: removing {}, left by an interrupted write", dir_, name);
      fs::remove(e.path(), ec);
    }
  }
  if (mode == RunDirMode::New) {
    if (holds_run(dir_)) {
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw ConfigError(fmt::format(
          "{} already holds a run; continue it with --resume, replace it with --overwrite, or give another --out",
          dir_));
    }
  } else if (mode == RunDirMode::Overwrite && holds_run(dir_)) {
    spdlog::warn("--overwrite: removing the earlier run in {}", dir_);
    for (const auto* f : kRunFiles)
      fs::remove(file(f), ec);
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      if (is_state_file(e.path().filename().string()))
        fs::remove(e.path(), ec);
    }
  }
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) {
    ::flock(lock_fd_, LOCK_UN);
    ::close(lock_fd_);
  }
}

std::string RunDir::state_for(int64_t step) const {
  return file(fmt::format("last.state-{}.pt", step));
}

std::optional<std::string> RunDir::resumable_state(int64_t weights_step) const {
  if (file_exists(state_for(weights_step))) {
    return state_for(weights_step);
  }
  if (file_exists(file("last.state.pt"))) {
    return file("last.state.pt");  // an earlier moejet's single state file; its step is checked on load
  }
  return std::nullopt;
}

void RunDir::prune_states(int64_t step) const {
  std::error_code ec;
  const std::string keep = fmt::format("last.state-{}.pt", step);
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const auto name = e.path().filename().string();
    if ((is_state_file(name) && name != keep) || name == "last.state.pt") {
      fs::remove(e.path(), ec);
    }
  }
}

}  // namespace moejet::train
