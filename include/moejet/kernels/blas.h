#pragma once
// Direct calls into the BLAS that libtorch itself uses, looked up at run time (Debian's libtorch
// links libblas.so.3, so its Fortran `sgemm_` is in the process). For loops of many small GEMMs
// (one per expert), ATen's bmm adds a per-matrix dispatch, and for some layouts a much slower
// path: a direct sgemm per expert was 2.6x faster on the SpheroMoE expert weight gradients.
// Where the symbol is not visible (e.g. a libtorch with a statically linked, hidden MKL),
// `blas_sgemm()` is null and callers fall back to torch ops.

namespace moejet::kernels {

/// The Fortran BLAS sgemm (column-major; LP64 ints, as libblas.so.3).
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);

/// The process's sgemm_, or null. Set MOEJET_DIRECT_BLAS=0 to force the fallback.
SgemmFn blas_sgemm();

/// While alive, OpenBLAS runs every call on the calling thread, so that several threads may each
/// run their own GEMMs (many small ones scale better that way than each on all cores); restores
/// the previous count. `active()` is false (and nothing changes) with another BLAS.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
  bool active() const {
    return previous_ > 0;
  }
  /// OpenBLAS's thread count before this guard (0 when not active).
  int previous_threads() const {
    return previous_;
  }

 private:
  int previous_ = 0;
};

}  // namespace moejet::kernels
