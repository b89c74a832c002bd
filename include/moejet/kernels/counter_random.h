#pragma once
// Counter-based random numbers: element i of a draw is a pure function of (key, i), so a tensor
// filled by any number of threads, in any split, holds the same values, and the only state a
// draw needs from torch's generator is one 64-bit key (torch::manual_seed reproduces it). Used
// by the fused CPU kernels (dropout masks, SpheroMoE's logit noise) where torch's own generator
// would be a serial Mersenne-Twister pass over the whole tensor: for SpheroMoE's noise on
// [32, 196, 294] that pass was 4.5 ms of a 47 ms layer forward on one core.
//
// This header and its source include no torch headers: the normal sampler is compiled with
// -fno-math-errno so that its loops vectorise (as kernels/adamw.cpp).

#include <cstdint>

namespace moejet::kernels {

/// splitmix64's output function: a bijective mix of a 64-bit counter that passes BigCrush as a
/// counter-based generator.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// A fresh key from torch's default CPU generator (advancing it), so that torch::manual_seed
/// reproduces every counter-based draw. Defined in counter_key.cpp, the one part with torch headers.
uint64_t draw_counter_key();

/// Word w of the stream `key` (w = 0, 1, ...).
inline uint64_t counter_word(uint64_t key, uint64_t w) {
  return mix64(key + 0x9e3779b97f4a7c15ULL * (w + 1));
}

/// out[j] = stddev * z(first + j) for j < count, z(i) standard normal: Box-Muller on the 24-bit
/// uniforms of word i / 2 (cosine branch for even i, sine for odd), with a polynomial log and
/// sin/cos (|error| < 1e-6 over the sampler's range, which reaches 5.77 sigma).
void counter_normal(float* out, int64_t count, uint64_t first, uint64_t key, float stddev);

}  // namespace moejet::kernels
