#include "moejet/core/blas_runtime.h"

#include <dlfcn.h>

#include <cctype>
#include <cstdlib>

namespace moejet {

namespace {

using GetThreads = int (*)();

GetThreads openblas_get() {
  static const auto fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn;
}

}  // namespace

OpenblasSetThreads openblas_set_num_threads_fn() {
  static const auto fn = reinterpret_cast<OpenblasSetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return fn;
}

std::string openblas_core_name() {
  using GetCore = char* (*)();
  static const auto fn = reinterpret_cast<GetCore>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = fn != nullptr ? fn() : nullptr;
  return name != nullptr ? name : "";
}

std::string openblas_coretype_needed() {
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  const std::string core = openblas_core_name();
  if ((set != nullptr && *set != '\0') || core.empty()) {
    return "";
  }
#if defined(__x86_64__) || defined(__i386__)
  // OpenBLAS's x86 kernel sets that use AVX2 (names as openblas_get_corename() reports them).
  std::string lower;
  for (char c : core)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* avx2 : {"haswell", "skylakex", "cooperlake", "sapphirerapids", "zen", "excavator"}) {
    if (lower == avx2) {
      return "";
    }
  }
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    return "";
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return "SkylakeX";
  }
  return "Haswell";
#else
  return "";
#endif
}

int openblas_num_threads() {
  return openblas_get() != nullptr ? openblas_get()() : -1;
}

std::string openblas_thread_timeout() {
  for (const char* name : {"OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      return v;
    }
  }
  return "";
}

bool openblas_thread_timeout_unset() {
  return openblas_num_threads() > 1 && openblas_thread_timeout().empty();
}

}  // namespace moejet
