#pragma once
// A training run's folder and the rules that keep its work safe. One training owns a folder at a
// time: it holds an flock on <dir>/.lock for its whole life (the kernel releases it when the
// process dies, however it dies), and a second training on the same folder stops with the first
// one's pid. A folder that already holds a run is only reused on purpose: to continue it
// (resume) or to replace it (overwrite, which first removes the earlier run's files); otherwise
// starting there is an error, so that no run silently replaces another's best checkpoint.
//
// The resumable pair is written so that a kill or a full disk at any moment leaves a run that
// resumes: the optimizer state goes to last.state-<step>.pt, and only then do the weights replace
// last.safetensors (whose metadata names their step) by an atomic rename; state files of other
// steps are removed after that. Until the rename, the previous weights and their own state file
// are untouched. Temporary files a killed writer left behind (*.tmp.<pid>) are removed when the
// next training takes the folder.

#include <cstdint>
#include <optional>
#include <string>

#include "moejet/core/json_util.h"
#include "moejet/io/state_dict.h"

namespace moejet::train {

enum class RunDirMode {
  New,        ///< the folder must not hold a run yet
  Resume,     ///< continue the run in it, if any
  Overwrite,  ///< remove an earlier run's files, then start a new one
};

/// `runs/<name>-<YYYYmmdd-HHMMSS>` (local time), a fresh folder per run as timm's output folders.
std::string default_run_dir(const std::string& name);

class RunDir {
 public:
  /// `writer` false: a reader of the folder (a data-parallel rank other than 0), which only needs
  /// its paths; no lock, no checks, no clean-up.
  RunDir(std::string dir, RunDirMode mode, bool writer = true);
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& dir() const {
    return dir_;
  }
  std::string file(const std::string& name) const {
    return dir_ + "/" + name;
  }
  std::string last() const {
    return file("last.safetensors");
  }
  std::string best() const {
    return file("best.safetensors");
  }
  /// The optimizer state that goes with the weights of optimizer step `step`.
  std::string state_for(int64_t step) const;
  /// The state file of the weights in last.safetensors (this layout's, or an earlier moejet's
  /// last.state.pt when its step matches); none when there is nothing to resume.
  std::optional<std::string> resumable_state(int64_t weights_step) const;
  /// After last.safetensors holds the weights of `step`: removes the state files of other steps.
  void prune_states(int64_t step) const;

  /// Whether `dir` holds a run (weights, state, metrics or config of one).
  static bool holds_run(const std::string& dir);

 private:
  std::string dir_;
  int lock_fd_ = -1;
};

}  // namespace moejet::train
