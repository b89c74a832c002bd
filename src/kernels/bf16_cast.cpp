#include "moejet/kernels/bf16_cast.h"

#include <torch/torch.h>

#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MOEJET_X86_BF16 1
#endif

#include <ATen/Parallel.h>

namespace moejet::kernels {

namespace {

#ifdef MOEJET_X86_BF16
__attribute__((target("avx512f,avx512bf16"))) void fp32_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), reinterpret_cast<__m512i>(v));
  }
  for (; i < n; ++i) {
    dst[i] = c10::BFloat16(src[i]).x;
  }
}

// GCC 12's avx512fintrin.h seeds the unused source of these intrinsics with a self-initialised
// `__Y = __Y`, and -Wmaybe-uninitialized then warns on every build (GCC bug 105593): a false
// alarm, silenced here only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) void bf16_to_fp32_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  for (; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &bits, sizeof(float));
  }
}
#pragma GCC diagnostic pop

bool has_avx512_bf16() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return yes;
}
#endif

bool fast_path(const torch::Tensor& x) {
#ifdef MOEJET_X86_BF16
  return has_avx512_bf16() && x.is_cpu() && x.is_contiguous();
#else
  return false;
#endif
}

// At least 64 K values per thread: below that a thread costs more than it saves. ATen's (OpenMP)
// pool, the one oneDNN's products run on, so that the two never compete for the cores.
constexpr int64_t kMinChunk = 1 << 16;

torch::Tensor convert(const torch::Tensor& x, torch::ScalarType to) {
  if (x.scalar_type() == to) {
    return x;
  }
#ifdef MOEJET_X86_BF16
  if (fast_path(x) && x.scalar_type() == torch::kFloat && to == torch::kBFloat16) {
    auto out = torch::empty(x.sizes(), x.options().dtype(torch::kBFloat16));
    const float* src = x.data_ptr<float>();
    auto* dst = reinterpret_cast<uint16_t*>(out.data_ptr());
    at::parallel_for(0, x.numel(), kMinChunk,
                     [&](int64_t b, int64_t e) { fp32_to_bf16_avx512(src + b, dst + b, e - b); });
    return out;
  }
  if (fast_path(x) && x.scalar_type() == torch::kBFloat16 && to == torch::kFloat) {
    auto out = torch::empty(x.sizes(), x.options().dtype(torch::kFloat));
    const auto* src = reinterpret_cast<const uint16_t*>(x.data_ptr());
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, x.numel(), kMinChunk,
                     [&](int64_t b, int64_t e) { bf16_to_fp32_avx512(src + b, dst + b, e - b); });
    return out;
  }
#endif
  return x.to(to);
}

struct CastFn : torch::autograd::Function<CastFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t to) {
    ctx->saved_data["from"] = static_cast<int64_t>(x.scalar_type());
    return convert(x, static_cast<torch::ScalarType>(to));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto from = static_cast<torch::ScalarType>(ctx->saved_data["from"].toInt());
    return {convert(grads[0].contiguous(), from), torch::Tensor()};
  }
};

torch::Tensor cast(const torch::Tensor& x, torch::ScalarType to) {
  if (!x.defined() || x.scalar_type() == to) {
    return x;
  }
  if (!fast_path(x)) {
    return x.to(to);
  }
  return CastFn::apply(x, static_cast<int64_t>(to));
}

}  // namespace

torch::Tensor to_bf16(const torch::Tensor& x) {
  return cast(x, torch::kBFloat16);
}

torch::Tensor to_fp32(const torch::Tensor& x) {
  return cast(x, torch::kFloat);
}

}  // namespace moejet::kernels
