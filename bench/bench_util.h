#pragma once
// What the micro-benchmarks share: Google Benchmark counters in the units a kernel is judged by.

#include <benchmark/benchmark.h>

#include <cstdint>

namespace moejet::bench {

/// Sets bytes/s from the bytes one iteration moves, and a GB/s counter.
inline void set_bandwidth(benchmark::State& state, int64_t bytes_per_iteration) {
  state.SetBytesProcessed(state.iterations() * bytes_per_iteration);
}

/// A GFLOP/s counter from the floating-point operations of one iteration.
inline void set_gflops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}

}  // namespace moejet::bench
