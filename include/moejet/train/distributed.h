#pragma once
// Data-parallel training on libtorch's own c10d: a TCPStore rendezvous at MASTER_ADDR:MASTER_PORT
// and a ProcessGroupGloo (CPU tensors) or ProcessGroupNCCL (CUDA builds, CUDA tensors). The
// environment is torchrun's: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
// (MOEJET_DIST_TIMEOUT seconds bounds every collective, default 300). Gradients are averaged in
// buckets of flattened tensors, issued asynchronously and waited on together; every failure or
// timeout of a peer becomes one moejet::Error naming this rank, instead of a hang.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace moejet::train {

struct DistConfig {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::seconds timeout{300};
  bool enabled() const {
    return world_size > 1;
  }
};

/// Reads the torchrun variables; WORLD_SIZE unset or 1 means single-process.
DistConfig dist_config_from_env();

/// Whether this build has a c10d backend (Gloo headers were found at configure time).
bool distributed_available();

class Distributed {
 public:
  Distributed(const DistConfig& config, torch::Device device);
  ~Distributed();
  int rank() const {
    return config_.rank;
  }
  int world_size() const {
    return config_.world_size;
  }
  bool is_main() const {
    return config_.rank == 0;
  }

  /// Copies rank 0's tensors into every rank's (same shapes everywhere).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  /// Replaces every defined gradient by its mean over the ranks.
  void average_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes = 25 << 20);
  /// Sum over the ranks (in place, returned).
  torch::Tensor sum(torch::Tensor t);
  /// Largest |difference| of any element of `tensors` between ranks (0 when in sync).
  double max_divergence(const std::vector<torch::Tensor>& tensors);
  void barrier();

 private:
  struct Impl;
  DistConfig config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moejet::train
