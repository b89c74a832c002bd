#pragma once
// What the process's BLAS is and how it was loaded: OpenBLAS's thread count, kernel set and idle
// spin, read from the library itself at run time (Debian's libtorch links libblas.so.3, which the
// alternatives system may point at OpenBLAS). The system report and the CLI's start-up checks use
// these; the direct sgemm and the single-threaded guard are in kernels/blas.h.

#include <string>

namespace moejet {

/// OpenBLAS's thread count, or -1 when the process's BLAS is not OpenBLAS.
int openblas_num_threads();

/// OpenBLAS's thread count setter, or null when the process's BLAS is not OpenBLAS.
using OpenblasSetThreads = void (*)(int);
OpenblasSetThreads openblas_set_num_threads_fn();

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

}  // namespace moejet
