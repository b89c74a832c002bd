#pragma once
// The floor a step's matrix products set: every product the step ran, on the operands it ran on
// (sizes, strides, dtypes), timed alone on warm caches and summed. No implementation that keeps
// those products and their kernels can step faster, so the gap between a step and its floor is
// what faster non-product code can still win, and the floor over a peer's step is the best
// ratio to that peer these kernels allow. It reads closer to the truth than a 2048^3 GEMM peak:
// a model's own shapes (K = 192 in ViT-T, 16 tokens in attention) run below that peak.
//
// Products are caught through ATen's RecordFunction observers, so ATen's own GEMMs (aten::mm,
// addmm, bmm, baddbmm, autograd's backward products included) and moejet's oneDNN products
// (moejet::onednn_matmul) are seen on any thread. A product that calls another is counted once,
// as its innermost. Convolutions and products outside both (moejet's direct BLAS calls, taken
// only without oneDNN) are not caught: they count in the rest of the step.

#include <string>
#include <vector>

#include <torch/types.h>

namespace moejet::kernels {

/// A tensor as a product saw it; `defined` is false for an absent optional operand.
struct TensorShape {
  bool defined = false;
  std::vector<int64_t> sizes, strides;
  c10::ScalarType dtype = c10::ScalarType::Float;
  c10::Device device = c10::Device(c10::DeviceType::CPU);
};

/// One product call: the op's name and its tensor operands in the op's order (aten::addmm:
/// self, mat1, mat2; moejet::onednn_matmul: a, b, out, bias, mul), with its scalar factor.
struct ProductCall {
  std::string op;
  std::vector<TensorShape> operands;
  double alpha = 1.0;
  /// How long it took where it ran (CPU: the product itself; CUDA: only its launch).
  double seconds = 0;
  /// 2 x the multiply-accumulates of the product.
  double flops() const;
  /// Identical calls share a key: op, dtypes, sizes and strides.
  std::string key() const;
};

/// While alive, records every product (see above) that runs in this process, on any thread.
/// One at a time; observers cost each ATen op a little, so record a step, not a run.
class ProductRecorder {
 public:
  ProductRecorder();
  ~ProductRecorder();
  ProductRecorder(const ProductRecorder&) = delete;
  ProductRecorder& operator=(const ProductRecorder&) = delete;
  /// The products recorded so far, in the order they ended.
  std::vector<ProductCall> calls() const;

 private:
  uint64_t handle_;
};

/// The calls that share one key.
struct ProductGroup {
  std::string key;
  int64_t calls = 0;
  double seconds = 0;  ///< alone: the median of one call, times `calls`
  double in_step = 0;  ///< the calls' own times in the step, summed
  double flops = 0;
};

/// The products of a recording, each distinct call timed alone.
struct ProductFloor {
  double seconds = 0;                ///< sum over calls of the call's median time alone
  double in_step = 0;                ///< sum of the calls' own `seconds`, as they ran in the step
  double flops = 0;                  ///< sum of the calls' flops()
  int64_t calls = 0;                 ///< products recorded
  int64_t distinct = 0;              ///< distinct keys among them (each timed once)
  std::vector<ProductGroup> groups;  ///< one per key, the most time in the step first
};

/// Times each distinct call on fresh operands of its sizes, strides and dtypes (random values),
/// the median of `reps` runs after one warm-up, synchronised on CUDA, and sums over all calls.
ProductFloor product_floor(const std::vector<ProductCall>& calls, int reps = 5);

}  // namespace moejet::kernels
