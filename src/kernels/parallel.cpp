#include "moejet/kernels/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>

#include <ATen/ThreadLocalState.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace moejet::kernels::detail {

void run_chunks(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t)>& fn) {
#ifdef _OPENMP
  const at::ThreadLocalState state;
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
  // No num_threads clause: a team of another size makes libgomp rebuild its pool, the one that
  // ATen's and oneDNN's regions reuse (ATen avoids it for the same reason); threads beyond
  // `chunks` skip their turn instead.
#pragma omp parallel
  {
    const int64_t used = std::min<int64_t>(chunks, omp_get_num_threads());
    const int64_t per = (n + used - 1) / used, tid = omp_get_thread_num(), begin = tid * per;
    if (tid < used && begin < n) {
      try {
        at::ThreadLocalStateGuard guard(state);
        fn(begin, std::min(n, begin + per));
      } catch (...) {
        if (!failed.test_and_set()) {
          error = std::current_exception();
        }
      }
    }
  }
  if (error) {
    std::rethrow_exception(error);
  }
#else
  (void)chunks;
  fn(0, n);  // built without OpenMP: one thread
#endif
}

}  // namespace moejet::kernels::detail
