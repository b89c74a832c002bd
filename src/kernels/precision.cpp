#include "moejet/kernels/precision.h"

#include <optional>

#include "moejet/core/error.h"

namespace moejet::kernels {

namespace {
thread_local Precision current = Precision::fp32;
}

std::string to_string(Precision p) {
  return p == Precision::bf16 ? "bf16" : "fp32";
}

namespace {

// The names of a precision, the one list both parsers read.
std::optional<Precision> precision_named(const std::string& text) {
  if (text == "fp32" || text == "float32") {
    return Precision::fp32;
  }
  if (text == "bf16" || text == "bfloat16") {
    return Precision::bf16;
  }
  return std::nullopt;
}

}  // namespace

Precision parse_precision(const std::string& text, const std::string& what) {
  if (auto p = precision_named(text)) {
    return *p;
  }
  throw ConfigError(fmt::format("{}: expected \"fp32\" or \"bf16\", got \"{}\"", what, text));
}

Precision resolve_precision(const std::string& text, const c10::Device& device, const std::string& what) {
  if (text == "auto") {
    return bf16_native(device) ? Precision::bf16 : Precision::fp32;
  }
  if (auto p = precision_named(text)) {
    return *p;
  }
  throw ConfigError(fmt::format("{}: expected \"fp32\", \"bf16\" or \"auto\", got \"{}\"", what, text));
}

Precision gemm_precision() {
  return current;
}

PrecisionScope::PrecisionScope(Precision p) : previous_(current) {
  current = p;
}

PrecisionScope::~PrecisionScope() {
  current = previous_;
}

bool bf16_native(const c10::Device& device) {
  if (device.is_cuda()) {
    return true;
  }
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#elif defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

void require_precision(Precision p, const c10::Device& device) {
  check<ConfigError>(p == Precision::fp32 || bf16_native(device),
                     "precision bf16: this CPU has no bf16 instructions (AVX512_BF16 or AMX-BF16), so "
                     "bf16 products would be emulated and slower than fp32; use precision fp32 "
                     "(train.precision / --precision)");
}

}  // namespace moejet::kernels
