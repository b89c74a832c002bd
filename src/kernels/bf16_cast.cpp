#include "moejet/kernels/bf16_cast.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MOEJET_X86_BF16 1
#endif

#include <ATen/Parallel.h>
#include <ATen/WrapDimUtils.h>

#include "moejet/kernels/parallel.h"

namespace moejet::kernels {

namespace {

#ifdef MOEJET_X86_BF16
// Lanes of x that are denormal (|x|'s bits in [1, 0x7fffff]) or NaN (above 0x7f800000).
__attribute__((target("avx512f"))) inline __mmask16 denormal_or_nan(__m512 x) {
  const __m512i a = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff));
  return static_cast<__mmask16>(
      _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fffff)) |
      _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7f800000)));
}

// VCVTNE2PS2BF16 rounds to nearest even as ATen (c10::BFloat16) does, but for denormals, which it
// flushes to zero, and NaNs, whose payload it keeps: those lanes, rare, are redone as ATen does,
// so that the result never depends on the path (kernels::adamw_update writes weights' bf16
// copies with ATen's rounding too).
__attribute__((target("avx512f,avx512bf16"))) void fp32_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
    const __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), reinterpret_cast<__m512i>(v));
    if ((denormal_or_nan(lo) | denormal_or_nan(hi)) != 0) {
      for (int64_t j = i; j < i + 32; ++j) {
        dst[j] = c10::BFloat16(src[j]).x;
      }
    }
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

// At least 64 K values per thread: below that a thread costs more than it saves. On the OpenMP team
// that oneDNN's products run on (kernels/parallel.h), so that the two never compete for the cores.
// Not at::parallel_for: its OpenMP branch is in a header, and this file is compiled without
// OpenMP, so it ran on one thread (2.5x ATen's own conversion on 2 cores).
constexpr int64_t kMinChunk = 1 << 16;

torch::Tensor convert(const torch::Tensor& x, torch::ScalarType to) {
  if (x.scalar_type() == to) {
    return x;
  }
#ifdef MOEJET_X86_BF16
  if (fast_path(x) && x.scalar_type() == torch::kFloat && to == torch::kBFloat16) {
    auto out = torch::empty(x.sizes(), x.options().dtype(torch::kBFloat16));
    to_bf16_into(x, out);
    return out;
  }
  if (fast_path(x) && x.scalar_type() == torch::kBFloat16 && to == torch::kFloat) {
    auto out = torch::empty(x.sizes(), x.options().dtype(torch::kFloat));
    const auto* src = reinterpret_cast<const uint16_t*>(x.data_ptr());
    float* dst = out.data_ptr<float>();
    parallel_chunks(x.numel(), kMinChunk, [&](int64_t b, int64_t e) { bf16_to_fp32_avx512(src + b, dst + b, e - b); });
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

void to_bf16_into(const torch::Tensor& x, torch::Tensor& out) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && out.scalar_type() == torch::kBFloat16 && out.is_contiguous() &&
                  out.sizes() == x.sizes() && out.device() == x.device(),
              "to_bf16_into: expected an fp32 source and a contiguous bf16 destination of its sizes, got ",
              x.scalar_type(), " ", x.sizes(), " into ", out.scalar_type(), " ", out.sizes());
#ifdef MOEJET_X86_BF16
  if (fast_path(x)) {
    const float* src = x.data_ptr<float>();
    auto* dst = reinterpret_cast<uint16_t*>(out.data_ptr());
    parallel_chunks(x.numel(), kMinChunk, [&](int64_t b, int64_t e) { fp32_to_bf16_avx512(src + b, dst + b, e - b); });
    return;
  }
#endif
  torch::NoGradGuard no_grad;
  out.copy_(x);
}

torch::Tensor to_bf16(const torch::Tensor& x) {
  return cast(x, torch::kBFloat16);
}

torch::Tensor to_fp32(const torch::Tensor& x) {
  return cast(x, torch::kFloat);
}

torch::Tensor sum_fp32(const torch::Tensor& x, int64_t dim) {
  dim = at::maybe_wrap_dim(dim, x.dim());
  if (x.scalar_type() != torch::kBFloat16 || !x.is_cpu() || !x.is_contiguous()) {
    return x.sum(dim, false, torch::kFloat);
  }
  // x as [outer, rows, inner]; the sum runs over rows.
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) {
    outer *= x.size(d);
  }
  for (int64_t d = dim + 1; d < x.dim(); ++d) {
    inner *= x.size(d);
  }
  const int64_t rows = x.size(dim);
  auto sizes = x.sizes().vec();
  sizes.erase(sizes.begin() + dim);
  auto out = torch::zeros(sizes, x.options().dtype(torch::kFloat));
  if (out.numel() == 0 || rows == 0) {
    return out;
  }
  const auto* src = reinterpret_cast<const uint16_t*>(x.data_ptr());
  float* dst = out.data_ptr<float>();
  // acc[0, inner) += rows r0..r1 of one [rows, inner] slice: bf16 widened exactly to fp32.
  auto add_rows = [inner](const uint16_t* slice, int64_t r0, int64_t r1, float* acc) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint16_t* row = slice + r * inner;
      for (int64_t i = 0; i < inner; ++i) {
        const uint32_t bits = static_cast<uint32_t>(row[i]) << 16;
        float v;
        std::memcpy(&v, &bits, sizeof(float));
        acc[i] += v;
      }
    }
  };
  if (outer > 1) {  // an expert's bias gradient: one slice a thread
    parallel_chunks(outer, std::max<int64_t>(1, min_rows_per_thread(rows * inner)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        add_rows(src + o * rows * inner, 0, rows, dst + o * inner);
      }
    });
    return out;
  }
  // One slice (a dense layer's bias gradient): the rows split over the threads, each summing into
  // its own partial, the partials added after.
  const int64_t parts =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / min_rows_per_thread(inner)));
  std::vector<float> partial(static_cast<size_t>((parts - 1) * inner), 0.0f);
  parallel_chunks(parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      add_rows(src, rows * p / parts, rows * (p + 1) / parts, p == 0 ? dst : partial.data() + (p - 1) * inner);
    }
  });
  for (int64_t p = 1; p < parts; ++p) {
    for (int64_t i = 0; i < inner; ++i) {
      dst[i] += partial[static_cast<size_t>((p - 1) * inner + i)];
    }
  }
  return out;
}

}  // namespace moejet::kernels
