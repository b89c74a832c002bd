// `moejet train --nproc N`: N local worker processes with torchrun's environment, the way
// `torchrun --standalone --nproc-per-node N` starts them. If one worker fails, the others are
// stopped, so that a crash never leaves a job hanging in a collective.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
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
    if (all[i].rfind("--nproc=", 0) == 0) continue;
    args.push_back(all[i]);
  }
  const int port = free_port();
  spdlog::info("starting {} local workers (rendezvous 127.0.0.1:{})", nproc, port);
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    check<Error>(pid >= 0, "--nproc: fork failed: {}", std::strerror(errno));
    if (pid == 0) {
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
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "--nproc: exec failed: %s\n", std::strerror(errno));
      _exit(127);
    }
    pids.push_back(pid);
  }
  int result = 0;
  size_t alive = pids.size();
  while (alive > 0) {
    int status = 0;
    pid_t done = waitpid(-1, &status, 0);
    if (done < 0) break;
    --alive;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && result == 0) {
      result = code;
      spdlog::error("worker pid {} exited with {}; stopping the other workers", done, code);
      for (pid_t p : pids) {
        if (p != done) kill(p, SIGTERM);
      }
    }
  }
  return result;
}

}  // namespace moejet::cli
