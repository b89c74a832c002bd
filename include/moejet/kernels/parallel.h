#pragma once
// Splitting a loop over the machine's cores with plain threads. libtorch's intra-op pool is often
// sized to 1 (Debian's build on 2 vCPUs), which would leave our own memory-bound loops on one
// core; these loops are independent of torch's pool and of OpenBLAS's threads.

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include <ATen/ThreadLocalState.h>

namespace moejet::kernels {

/// Calls fn(begin, end) on disjoint ranges covering [0, n), on up to 4 threads, never splitting
/// below `min_chunk` items per thread. The workers run with the caller's ATen thread-local state
/// (grad mode, inference mode, ...), as ATen's own parallel_for does: a torch op writing an
/// inference tensor from a worker outside InferenceMode would throw.
template <class Fn>
void parallel_chunks(int64_t n, int64_t min_chunk, const Fn& fn) {
  const auto cores = static_cast<int64_t>(std::max(1u, std::min(4u, std::thread::hardware_concurrency())));
  const int64_t chunks = std::min<int64_t>(cores, std::max<int64_t>(1, n / std::max<int64_t>(min_chunk, 1)));
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> threads;
  const int64_t per = (n + chunks - 1) / chunks;
  const at::ThreadLocalState state;
  for (int64_t c = 1; c < chunks; ++c) {
    threads.emplace_back(
        [&fn, &state](int64_t b, int64_t e) {
          at::ThreadLocalStateGuard guard(state);
          fn(b, e);
        },
        c * per, std::min(n, (c + 1) * per));
  }
  fn(int64_t{0}, std::min(n, per));
  for (auto& t : threads) {
    t.join();
  }
}

}  // namespace moejet::kernels
