#pragma once
// Building blocks of moejet's AVX-512 row kernels (attention's softmax, GELU): masked loads and
// stores of 16 fp32 or bf16 values, and exp. Private to src/kernels. Each kernel is compiled for
// these instructions with target attributes and runs only where cpu_has_avx512_rows() says the
// CPU has them (AVX512F/BW/VL and AVX512_BF16: Zen 4 and later, Cooper Lake, Sapphire Rapids);
// callers keep an ATen path for every other CPU.

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#define MOEJET_X86_AVX512 1

namespace moejet::kernels::avx512_rows {

// GCC 12's AVX-512 headers seed the unused source of some intrinsics with a self-initialised
// value, and -Wmaybe-uninitialized warns on every use (GCC bug 105593): a false alarm, silenced
// for these helpers and, by the same two lines, in the kernels built on them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// exp on 16 lanes for softmax arguments (x <= 0): 2^n * p(r) with n = round(x / ln 2),
// r = x - n ln 2 in two parts, p the degree-6 Taylor polynomial (relative error < 2e-7 on
// |r| <= ln2 / 2); below -87.3 the result flushes to 0.
__attribute__((target("avx512f"))) inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline void store_row(float* dst, int64_t i,
                                                                                      __mmask16 m, __m512 v) {
  _mm512_mask_storeu_ps(dst + i, m, v);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline void store_row(uint16_t* dst, int64_t i,
                                                                                      __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline __m512 load_row(const float* src, int64_t i,
                                                                                       __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, src + i);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline __m512 load_row(const uint16_t* src, int64_t i,
                                                                                       __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i)), 16));
}

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// MOEJET_AVX512_ROWS=0 turns the kernels off (the tests run the ATen paths that way).
inline bool cpu_has_avx512_rows() {
  static const bool yes = [] {
    const char* env = std::getenv("MOEJET_AVX512_ROWS");
    if (env != nullptr && std::strcmp(env, "0") == 0) {
      return false;
    }
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return yes;
}

#pragma GCC diagnostic pop

}  // namespace moejet::kernels::avx512_rows

#endif
