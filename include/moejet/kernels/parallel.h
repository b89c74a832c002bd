#pragma once
// Splitting a loop over the cores on the OpenMP team that libtorch's and oneDNN's kernels run on
// (one libgomp in Debian's build). A kernel right after a GEMM finds those threads awake. Threads
// of our own (one std::thread per call, as before) had to wait for a core while the GEMM's OpenMP
// workers still spun on it: on 2 cores the main job's Soft MoE softmax ([128, 16, 16]) took up to
// 12 ms instead of microseconds, and its train step was 2.8 times slower. The thread count is
// torch's (`set_compute_threads`, OMP_NUM_THREADS), so processes sharing the machine (ctest -j,
// one process per rank) do not oversubscribe it.

#include <algorithm>
#include <cstdint>
#include <functional>

#include <ATen/Parallel.h>

namespace moejet::kernels {

namespace detail {
/// The OpenMP region (src/kernels/parallel.cpp, the one file compiled with OpenMP).
void run_chunks(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t)>& fn);
}  // namespace detail

/// Calls fn(begin, end) on disjoint ranges covering [0, n), on up to torch's intra-op thread
/// count, never splitting below `min_chunk` items per thread. The workers run with the caller's
/// ATen thread-local state (grad mode, inference mode, ...): a torch op writing an inference
/// tensor from a worker outside InferenceMode would throw. A call from inside another parallel
/// region runs on the calling thread.
template <class Fn>
void parallel_chunks(int64_t n, int64_t min_chunk, const Fn& fn) {
  if (n <= 0) {
    return;
  }
  const int64_t chunks = std::min<int64_t>(at::get_num_threads(), n / std::max<int64_t>(min_chunk, 1));
  if (chunks <= 1 || at::in_parallel_region()) {
    fn(int64_t{0}, n);
    return;
  }
  detail::run_chunks(n, chunks, std::cref(fn));
}

/// Rows of `row_len` elements to give each thread at least: row kernels below 16k elements a
/// thread cost more in waking threads than they save.
inline int64_t min_rows_per_thread(int64_t row_len) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_len, 1));
}

}  // namespace moejet::kernels
