#include "moejet/core/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

namespace moejet {

SgemmFn blas_sgemm() {
  static const SgemmFn fn = [] {
    const char* env = std::getenv("MOEJET_DIRECT_BLAS");
    if (env != nullptr && std::strcmp(env, "0") == 0) {
      return SgemmFn{nullptr};
    }
    return reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  }();
  return fn;
}

namespace {

using GetThreads = int (*)();
using SetThreads = void (*)(int);

GetThreads openblas_get() {
  static const auto fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn;
}

SetThreads openblas_set() {
  static const auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return fn;
}

}  // namespace

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

SingleThreadedBlas::SingleThreadedBlas() {
  if (openblas_get() != nullptr && openblas_set() != nullptr) {
    previous_ = openblas_get()();
    openblas_set()(1);
  }
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (previous_ > 0) {
    openblas_set()(previous_);
  }
}

}  // namespace moejet
