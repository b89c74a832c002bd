#pragma once
// Direct calls into the BLAS that libtorch itself uses, looked up at run time (Debian's libtorch
// links libblas.so.3, so its Fortran `sgemm_` is in the process). For loops of many small GEMMs
// (one per expert), ATen's bmm adds a per-matrix dispatch, and for some layouts a much slower
// path: a direct sgemm per expert was 2.6x faster on the SpheroMoE expert weight gradients.
// Where the symbol is not visible (e.g. a libtorch with a statically linked, hidden MKL),
// `blas_sgemm()` is null and callers fall back to torch ops.

#include <string>

namespace moejet {

/// The Fortran BLAS sgemm (column-major; LP64 ints, as libblas.so.3).
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);

/// The process's sgemm_, or null. Set MOEJET_DIRECT_BLAS=0 to force the fallback.
SgemmFn blas_sgemm();

/// OpenBLAS's thread count, or -1 when the process's BLAS is not OpenBLAS.
int openblas_num_threads();

/// How long an idle OpenBLAS worker spins (sched_yield) before it sleeps: OpenBLAS reads
/// OPENBLAS_THREAD_TIMEOUT (or GOTO_THREAD_TIMEOUT), 2^value cycles, once when it loads; unset,
/// Debian's build spins for 2^28 cycles (~0.1 s). Between BLAS calls a spinning worker holds a core
/// that our own threads (expert GEMMs, fused kernels, the optimizer) and the hypervisor's other
/// vCPU want: on 2 cores, 2^16 cycles made the V-JetMoE-T train step 8-13% faster and the dense
/// ViT-T one 2-5%. Returns the value in effect, or "" when unset.
std::string openblas_thread_timeout();

/// The value the moejet CLI sets (by re-executing itself) when the user has not: 2^16 cycles.
inline constexpr const char* kOpenblasThreadTimeout = "16";

/// True when this process's BLAS is a multi-threaded OpenBLAS that was loaded without a thread
/// timeout, i.e. setting one needs a fresh process (OpenBLAS reads it only when it loads).
bool openblas_thread_timeout_unset();

/// OpenBLAS's kernel set ("Haswell", "SkylakeX", "Prescott", ...), or "" when the process's BLAS
/// is not OpenBLAS.
std::string openblas_core_name();

/// The OPENBLAS_CORETYPE a fresh process needs, or "" when none: OpenBLAS picks its kernels by the
/// CPU model when it loads, and 0.3.21 (Debian 12) does not know recent Xeons (e.g. family 6
/// model 207, Emerald Rapids), so it falls back to its SSE3 "Prescott" kernels. There the dense
/// Fashion-MNIST ViT trained at 142 img/s, against 404 with SkylakeX kernels. Non-empty when this
/// process's OpenBLAS runs kernels without AVX2 on a CPU that has AVX2 and FMA, and
/// OPENBLAS_CORETYPE is unset: "SkylakeX" with AVX-512 F/BW/DQ/VL, otherwise "Haswell".
std::string openblas_coretype_needed();

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

}  // namespace moejet
