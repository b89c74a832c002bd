#include "moejet/kernels/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include "moejet/core/blas_runtime.h"

namespace moejet::kernels {

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

SingleThreadedBlas::SingleThreadedBlas() {
  if (openblas_num_threads() > 0 && openblas_set_num_threads_fn() != nullptr) {
    previous_ = openblas_num_threads();
    openblas_set_num_threads_fn()(1);
  }
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (previous_ > 0) {
    openblas_set_num_threads_fn()(previous_);
  }
}

}  // namespace moejet::kernels
