#include "moejet/core/system.h"

#include <sched.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <torch/cuda.h>
#include <torch/utils.h>

#include "moejet/core/blas_runtime.h"
#include "moejet/core/error.h"

namespace moejet {

namespace {

// The BLAS actually mapped into this process, found through /proc/self/maps so that alternatives
// and LD_LIBRARY_PATH overrides are seen as the dynamic loader resolved them.
std::string loaded_blas_path() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) {
      continue;
    }
    std::string path = line.substr(pos);
    auto name = std::filesystem::path(path).filename().string();
    if (name.rfind("libblas.so", 0) == 0 || name.rfind("libopenblas", 0) == 0 || name.rfind("libmkl_rt", 0) == 0 ||
        name.rfind("libblis", 0) == 0) {
      std::error_code ec;
      auto canon = std::filesystem::canonical(path, ec);
      return ec ? path : canon.string();
    }
  }
  return "";
}

}  // namespace

SystemInfo system_info() {
  SystemInfo info;
  info.torch_version = fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
  info.torch_threads = torch::get_num_threads();
  info.cuda_available = torch::cuda::is_available();
  info.blas_path = loaded_blas_path();
  const std::string& p = info.blas_path;
  if (const int threads = openblas_num_threads(); threads >= 0) {
    info.blas = "OpenBLAS";
    info.blas_threads = threads;
    info.blas_thread_timeout = openblas_thread_timeout();
    info.blas_core = openblas_core_name();
  } else if (p.find("mkl") != std::string::npos) {
    info.blas = "MKL";
  } else if (p.find("blis") != std::string::npos) {
    info.blas = "BLIS";
  } else if (p.find("/blas/libblas") != std::string::npos || p.find("libblas.so.3") != std::string::npos) {
    info.blas = "reference BLAS";
    info.reference_blas = true;
  } else if (p.empty()) {
    info.blas = "built-in (no libblas loaded)";
  } else {
    info.blas = p;
  }
  return info;
}

std::string SystemInfo::summary() const {
  std::string s = fmt::format("libtorch {} | BLAS: {}", torch_version, blas);
  if (!blas_core.empty()) {
    s += fmt::format(" {}", blas_core);
  }
  if (!blas_path.empty()) {
    s += fmt::format(" ({})", blas_path);
  }
  s += fmt::format(" | torch threads {}", torch_threads);
  if (blas_threads > 0) {
    s += fmt::format(", BLAS threads {}", blas_threads);
    if (blas_threads > 1) {
      s += blas_thread_timeout.empty() ? std::string(" (idle spin: OpenBLAS default)")
                                       : fmt::format(" (idle spin 2^{} cycles)", blas_thread_timeout);
    }
  }
  s += cuda_available ? " | CUDA available" : " | CPU only";
  return s;
}

int set_compute_threads(int threads) {
  if (threads <= 0 && std::getenv("OMP_NUM_THREADS") != nullptr) {
    return torch::get_num_threads();  // the user's (or --nproc's share of the cores), as libtorch read it
  }
  if (threads <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    threads = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                           : static_cast<int>(std::thread::hardware_concurrency());
    threads = std::max(threads, 1);
  }
  if (torch::get_num_threads() != threads) {
    torch::set_num_threads(threads);
  }
  // OpenBLAS keeps its own pool, sized when it loaded (OMP_NUM_THREADS or every CPU); left alone,
  // `--threads 1` in two processes sharing two cores would still run their fp32 GEMMs on two
  // threads each.
  if (const auto set_blas = openblas_set_num_threads_fn(); set_blas != nullptr && openblas_num_threads() != threads) {
    set_blas(threads);
  }
  return threads;
}

torch::Device parse_device(const std::string& name) {
  torch::Device dev(torch::kCPU);
  try {
    dev = torch::Device(name);
  } catch (const c10::Error&) {
    throw ConfigError(fmt::format("--device '{}': expected cpu, cuda or cuda:N", name));
  }
  if (dev.is_cuda() && !torch::cuda::is_available()) {
    throw ConfigError(
        fmt::format("--device '{}': this libtorch build has no usable CUDA device (CPU-only build or no GPU)", name));
  }
  return dev;
}

}  // namespace moejet
