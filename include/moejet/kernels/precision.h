#pragma once
// The arithmetic precision of the matrix products (GEMMs and convolutions), the one choice of
// mixed-precision training: with `bf16`, the operands of every product that goes through
// kernels/matmul.h are rounded to bfloat16 and the product is accumulated in fp32 and returned in
// fp32, so that everything else (master weights, gradients, optimizer state, norms, softmax,
// entmax, reductions and the loss) stays fp32, and checkpoints are written in fp32. This is what
// `torch.autocast(dtype=torch.bfloat16)` does at the same ops, made explicit at moejet's one
// dispatch point rather than by a global dispatch key. The precision is a thread-local scope that
// the trainer, the evaluator and the benchmark open; backward follows the dtypes the forward saved.

#include <string>

#include <c10/core/Device.h>

namespace moejet::kernels {

enum class Precision { fp32, bf16 };

/// "fp32" or "bf16".
std::string to_string(Precision p);
/// Parses "fp32" / "bf16" (also "float32", "bfloat16"); throws ConfigError naming `what` otherwise.
Precision parse_precision(const std::string& text, const std::string& what = "precision");

/// The precision of this thread's matrix products (fp32 unless a PrecisionScope is open).
Precision gemm_precision();

/// Sets this thread's precision while alive; restores the previous one.
class PrecisionScope {
 public:
  explicit PrecisionScope(Precision p);
  ~PrecisionScope();
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  Precision previous_;
};

/// Whether `device` multiplies bf16 natively: a CUDA device, or a CPU with AVX512_BF16 or AMX-BF16
/// (elsewhere oneDNN emulates bf16 and it is slower than fp32).
bool bf16_native(const c10::Device& device);

/// Throws ConfigError when `p` is bf16 and `device` has no native bf16, naming the fix.
void require_precision(Precision p, const c10::Device& device);

/// parse_precision, plus "auto": bf16 where `device` has native bf16 (bf16_native), else fp32.
Precision resolve_precision(const std::string& text, const c10::Device& device, const std::string& what = "precision");

}  // namespace moejet::kernels
