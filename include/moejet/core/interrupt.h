#pragma once
// A graceful stop on Ctrl-C (SIGINT) or a batch system's SIGTERM. While an InterruptGuard lives,
// the first such signal only sets a flag that long-running loops poll at a safe point (the
// trainer: after an optimizer step, where it writes a resumable checkpoint and returns). The
// handler then restores the default action, so a second Ctrl-C ends the process at once, as
// users expect when a save takes too long.

namespace moejet {

class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  /// The signal that asked to stop (SIGINT or SIGTERM), or 0 if none has arrived.
  static int requested();
};

}  // namespace moejet
