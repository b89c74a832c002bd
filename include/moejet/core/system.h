#pragma once
// What the process computes with: libtorch version, the BLAS that libblas.so.3 resolves to, and
// thread counts. Debian's libtorch calls whatever libblas.so.3 the alternatives system points at;
// on a bare Debian that is the reference BLAS, about 70x slower than OpenBLAS, so moejet reports
// it at start-up and warns.

#include <string>

#include <torch/types.h>

namespace moejet {

struct SystemInfo {
  std::string torch_version;
  std::string blas;       ///< "OpenBLAS", "reference BLAS", "MKL", "BLIS", or the library path.
  std::string blas_path;  ///< Resolved path of the loaded BLAS library ("" if none found).
  bool reference_blas = false;
  int torch_threads = 1;
  int blas_threads = -1;            ///< -1 when the BLAS does not tell.
  std::string blas_thread_timeout;  ///< OpenBLAS's idle-spin exponent from the environment, or "".
  std::string blas_core;            ///< OpenBLAS's kernel set (e.g. "SkylakeX"), or "".
  bool cuda_available = false;
  std::string summary() const;
};

SystemInfo system_info();

/// Sets libtorch's intra-op (OpenMP) threads, and OpenBLAS's when it is the BLAS: `threads` when > 0, otherwise one per
/// CPU this process may run on (or OMP_NUM_THREADS when set, as `--nproc` sets it for its workers). libtorch's own
/// default counts physical cores as cpuinfo sees them, which is 1 on some 2-vCPU virtual machines, and the matrix
/// products (oneDNN) run on this pool: a ViT-T train step took 2x as long on 1 thread as on 2 there. Returns the count
/// set.
int set_compute_threads(int threads);

/// Parses "cpu", "cuda", "cuda:1"; throws ConfigError for unknown or unavailable devices.
torch::Device parse_device(const std::string& name);

}  // namespace moejet
