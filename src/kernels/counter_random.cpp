#include "moejet/kernels/counter_random.h"

#include <cmath>
#include <cstring>

namespace moejet::kernels {

namespace {

// Four Box-Muller pairs at a time in GCC/Clang vector types (an SSE register on the baseline
// x86-64 target, NEON on ARM), branch-free.
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
constexpr int kPairs = 4;

inline v4f select(v4i mask, v4f a, v4f b) {
  return (v4f)(((v4i)a & mask) | ((v4i)b & ~mask));
}

// ln(x) for normal floats x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s),
// s = (m - 1) / (m + 1), |s| < 0.172, whose odd series to s^9 is within 1e-8.
inline v4f log4(v4f x) {
  const v4i bits = (v4i)x;
  v4i e = ((bits >> 23) & 0xff) - 127;
  v4f m = (v4f)((bits & 0x7fffff) | 0x3f800000);
  const v4i big = m > 1.41421356f;  // all ones where true
  m = select(big, m * 0.5f, m);
  e -= big;
  const v4f s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  const v4f series = 1.0f + s2 * (1.0f / 3.0f + s2 * (1.0f / 5.0f + s2 * (1.0f / 7.0f + s2 * (1.0f / 9.0f))));
  return __builtin_convertvector(e, v4f) * 0.69314718056f + 2.0f * s * series;
}

// sin and cos of 2 pi u for u in [0, 1): with phi = 2 pi (u - 1/2) in [-pi, pi), sin(2 pi u) =
// -sin(phi) and cos(2 pi u) = -cos(phi); phi is folded into [-pi/2, pi/2] (flipping the cosine),
// where Taylor series to x^11 / x^12 are within 1e-7.
inline void sincos_2pi4(v4f u, v4f* sin_out, v4f* cos_out) {
  constexpr float kPi = 3.14159265358979f, kHalfPi = 1.57079632679490f;
  v4f x = 2.0f * kPi * (u - 0.5f);
  const v4i hi = x > kHalfPi, lo = x < -kHalfPi;
  x = select(hi, kPi - x, select(lo, -kPi - x, x));
  const v4f sign_cos = select(hi | lo, v4f{} + 1.0f, v4f{} - 1.0f);
  const v4f x2 = x * x;
  const v4f sn =
      x * (1.0f +
           x2 * (-1.0f / 6.0f +
                 x2 * (1.0f / 120.0f + x2 * (-1.0f / 5040.0f + x2 * (1.0f / 362880.0f + x2 * (-1.0f / 39916800.0f))))));
  const v4f cs =
      1.0f + x2 * (-0.5f + x2 * (1.0f / 24.0f +
                                 x2 * (-1.0f / 720.0f + x2 * (1.0f / 40320.0f + x2 * (-1.0f / 3628800.0f +
                                                                                      x2 * (1.0f / 479001600.0f))))));
  *sin_out = -sn;
  *cos_out = sign_cos * cs;
}

// The normal pairs (z(2p), z(2p + 1)), times stddev, for p = p0 .. p0 + kPairs - 1.
inline void normal_pairs(uint64_t key, uint64_t p0, float stddev, float* even, float* odd) {
  constexpr float kScale = 1.0f / 16777216.0f;  // 2^-24
  v4f u1, u2;
  for (int j = 0; j < kPairs; ++j) {
    const uint64_t w = counter_word(key, p0 + static_cast<uint64_t>(j));
    u1[j] = static_cast<float>((w >> 40) + 1) * kScale;           // (0, 1]
    u2[j] = static_cast<float>((w >> 8) & 0xffffffULL) * kScale;  // [0, 1)
  }
  const v4f r2 = -2.0f * log4(u1);
  v4f sn, cs;
  sincos_2pi4(u2, &sn, &cs);
  float r[kPairs];
  for (int j = 0; j < kPairs; ++j) {
    r[j] = stddev * std::sqrt(r2[j]);
  }
  for (int j = 0; j < kPairs; ++j) {
    even[j] = r[j] * cs[j];
    odd[j] = r[j] * sn[j];
  }
}

}  // namespace

void counter_normal(float* out, int64_t count, uint64_t first, uint64_t key, float stddev) {
  if (count <= 0) {
    return;
  }
  const uint64_t end = first + static_cast<uint64_t>(count);
  float even[kPairs], odd[kPairs];
  uint64_t p = first / 2;
  // Whole blocks: elements 2p .. 2p + 2 kPairs - 1 all inside [first, end).
  if (first % 2 == 0) {
    for (; 2 * (p + kPairs) <= end; p += kPairs) {
      normal_pairs(key, p, stddev, even, odd);
      float* o = out + (2 * p - first);
      for (int j = 0; j < kPairs; ++j) {
        o[2 * j] = even[j];
        o[2 * j + 1] = odd[j];
      }
    }
  }
  // The rest element by element (an odd start, and the tail).
  for (; 2 * p < end; p += kPairs) {
    normal_pairs(key, p, stddev, even, odd);
    for (int j = 0; j < kPairs; ++j) {
      const uint64_t i = 2 * (p + static_cast<uint64_t>(j));
      if (i >= first && i < end) {
        out[i - first] = even[j];
      }
      if (i + 1 >= first && i + 1 < end) {
        out[i + 1 - first] = odd[j];
      }
    }
  }
}

}  // namespace moejet::kernels
