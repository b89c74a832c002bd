#include "moejet/kernels/dropout.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/torch.h>

#include <cmath>

#include "moejet/kernels/counter_random.h"
#include "moejet/kernels/parallel.h"

namespace moejet::kernels {

namespace {

// Bytes of the keep mask (1 keep, 0 drop) and y = x * keep * scale for the elements of words
// [w0, w1) (word w covers elements 2w and 2w + 1 of the n). S: the type the product is taken in
// (float for bf16, whose own 1 / (1 - p) would be off by up to 0.2%).
template <class T, class S>
void dropout_words(const T* x, T* y, uint8_t* keep, int64_t n, int64_t w0, int64_t w1, uint64_t seed,
                   uint64_t drop_below, S scale) {
  // Branch-free: the keep decisions are random, so a branch on them mispredicts ~p of the time.
  const S scales[2] = {S(0), scale};
  for (int64_t w = w0; w < w1; ++w) {
    // Element i's 32 random bits are half of word i / 2, so any split over threads draws the same mask.
    const uint64_t word = counter_word(seed, static_cast<uint64_t>(w));
    const uint8_t k0 = (word & 0xffffffffULL) >= drop_below;
    const uint8_t k1 = (word >> 32) >= drop_below;
    keep[2 * w] = k0;
    y[2 * w] = static_cast<T>(static_cast<S>(x[2 * w]) * scales[k0]);
    if (2 * w + 1 < n) {
      keep[2 * w + 1] = k1;
      y[2 * w + 1] = static_cast<T>(static_cast<S>(x[2 * w + 1]) * scales[k1]);
    }
  }
}

struct DropoutFn : torch::autograd::Function<DropoutFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, double p) {
    auto x = input.contiguous();
    auto y = torch::empty_like(x);
    auto keep = torch::empty(x.sizes(), x.options().dtype(torch::kUInt8));
    const auto drop_below = static_cast<uint64_t>(std::llround(std::ldexp(p, 32)));
    const double scale = 1.0 / (1.0 - p);
    const uint64_t seed = draw_counter_key();
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "moejet_dropout", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const scalar_t* xp = x.data_ptr<scalar_t>();
      scalar_t* yp = y.data_ptr<scalar_t>();
      uint8_t* kp = keep.data_ptr<uint8_t>();
      const int64_t n = x.numel();
      parallel_chunks((n + 1) / 2, int64_t{1} << 15, [&](int64_t w0, int64_t w1) {
        dropout_words(xp, yp, kp, n, w0, w1, seed, drop_below, static_cast<opmath_t>(scale));
      });
    });
    ctx->save_for_backward({keep});
    ctx->saved_data["scale"] = scale;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto keep = ctx->get_saved_variables()[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    auto g = grads[0].contiguous();
    auto dx = torch::empty_like(g);
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, g.scalar_type(), "moejet_dropout_backward", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const scalar_t* gp = g.data_ptr<scalar_t>();
      const uint8_t* kp = keep.data_ptr<uint8_t>();
      scalar_t* dp = dx.data_ptr<scalar_t>();
      const auto s = static_cast<opmath_t>(scale);
      parallel_chunks(g.numel(), int64_t{1} << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          dp[i] = static_cast<scalar_t>(static_cast<opmath_t>(gp[i]) * (s * static_cast<opmath_t>(kp[i])));
        }
      });
    });
    return {dx, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_dropout(const torch::Tensor& x, double p) {
  TORCH_CHECK(x.is_cpu() && (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble ||
                             x.scalar_type() == torch::kBFloat16),
              "fused_dropout: a CPU float, double or bfloat16 tensor, got ", x.options());
  TORCH_CHECK(p > 0.0 && p < 1.0, "fused_dropout: p must be in (0, 1), got ", p);
  return DropoutFn::apply(x, p);
}

}  // namespace moejet::kernels
