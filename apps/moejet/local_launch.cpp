// `moejet train --nproc N`: N local worker processes with torchrun's environment, the way
// `torchrun --standalone --nproc-per-node N` starts them. If one worker fails, the others are
// stopped, so that a crash never leaves a job hanging in a collective: SIGTERM first (a worker
// then writes a resumable checkpoint), SIGKILL after a grace period (MOEJET_KILL_GRACE seconds,
// default 30) for one that is hung or stopped. Signals to the launcher (Ctrl-C, a batch system's
// SIGTERM) are forwarded to the workers, which sit in their own process group so that a
// terminal's Ctrl-C reaches them once, through the launcher; if the launcher itself dies, the
// kernel sends each worker SIGTERM (PR_SET_PDEATHSIG), so no worker trains on as an orphan.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "moejet/core/error.h"

namespace moejet::cli {

namespace {

std::vector<std::string>& command_line() {
  static std::vector<std::string> args;
  return args;
}

// A port the kernel says is free now (bind to 0), for the local rendezvous.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  check<Error>(fd >= 0, "--nproc: cannot open a socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  check<Error>(ok, "--nproc: cannot find a free port: {}", std::strerror(errno));
  return ntohs(addr.sin_port);
}

volatile sig_atomic_t g_signals_received = 0;
volatile sig_atomic_t g_last_signal = 0;

extern "C" void on_launcher_signal(int sig) {
  g_last_signal = sig;
  g_signals_received = g_signals_received + 1;
}

double kill_grace_seconds() {
  const char* env = std::getenv("MOEJET_KILL_GRACE");
  if (env == nullptr)
    return 30.0;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  check<ConfigError>(end != env && *end == '\0' && v >= 0, "MOEJET_KILL_GRACE: expected seconds >= 0, got '{}'", env);
  return v;
}

}  // namespace

void set_command_line(int argc, char** argv) {
  command_line().assign(argv, argv + argc);
}

int launch_local_workers(int nproc) {
  check<ConfigError>(nproc >= 2, "--nproc: expected at least 2 processes, got {}", nproc);
  // The same command line without --nproc N / --nproc=N.
  std::vector<std::string> args;
  const auto& all = command_line();
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] == "--nproc") {
      ++i;
      continue;
    }
    if (all[i].rfind("--nproc=", 0) == 0)
      continue;
    args.push_back(all[i]);
  }
  const int port = free_port();
  spdlog::info("starting {} local workers (rendezvous 127.0.0.1:{})", nproc, port);
  const double grace = kill_grace_seconds();
  struct sigaction sa {};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    sigaction(sig, &sa, nullptr);
  const pid_t launcher = getpid();
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    check<Error>(pid >= 0, "--nproc: fork failed: {}", std::strerror(errno));
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != launcher)
        _exit(1);  // the launcher died before prctl took effect
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      // Like torchrun: share the cores instead of every worker's BLAS claiming all of them.
      const std::string threads = std::to_string(std::max(1u, std::thread::hardware_concurrency() / nproc));
      setenv("OMP_NUM_THREADS", threads.c_str(), 0);
      setenv("OPENBLAS_NUM_THREADS", threads.c_str(), 0);
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "--nproc: exec failed: %s\n", std::strerror(errno));
      _exit(127);
    }
    pids.push_back(pid);
  }
  using Clock = std::chrono::steady_clock;
  const auto grace_period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace));
  std::vector<bool> running(pids.size(), true);
  auto signal_workers = [&](int sig) {
    for (size_t k = 0; k < pids.size(); ++k) {
      if (running[k])
        kill(pids[k], sig);
    }
  };
  int result = 0;
  int signals_forwarded = 0;
  bool stopping = false;  // the workers were asked to stop; at kill_at they are made to
  Clock::time_point kill_at;
  size_t alive = pids.size();
  while (alive > 0) {
    int status = 0;
    const pid_t done = waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      const auto k = static_cast<size_t>(std::find(pids.begin(), pids.end(), done) - pids.begin());
      if (k < running.size())
        running[k] = false;
      --alive;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && result == 0) {
        result = code;
        if (!stopping) {
          spdlog::error("worker pid {} exited with {}; stopping the other workers", done, code);
          signal_workers(SIGTERM);
          stopping = true;
          kill_at = Clock::now() + grace_period;
        }
      }
      continue;
    }
    if (done < 0 && errno != EINTR)
      break;
    if (signals_forwarded < g_signals_received) {
      ++signals_forwarded;
      const int sig = g_last_signal;
      spdlog::warn("--nproc: forwarding {} to the workers", strsignal(sig));
      signal_workers(sig);
      if (!stopping) {
        stopping = true;
        kill_at = Clock::now() + grace_period;
      }
    }
    if (stopping && Clock::now() >= kill_at) {
      spdlog::error("--nproc: {} worker(s) still running {:g} s after being asked to stop; killing them", alive, grace);
      signal_workers(SIGKILL);
      kill_at = Clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    signal(sig, SIG_DFL);
  return result;
}

}  // namespace moejet::cli
