#include "moejet/kernels/row_ops.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "moejet/kernels/parallel.h"
#include "moejet/kernels/tracing.h"
#include "softmax_rows.h"

namespace moejet::kernels {

namespace {

bool rows_fused(const torch::Tensor& x) {
  return !tracing() && x.is_cpu() && x.scalar_type() == torch::kFloat && x.dim() >= 1 && x.size(-1) > 0;
}

struct L2NormalizeFn : torch::autograd::Function<L2NormalizeFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, double eps,
                               bool additive) {
    auto x = input.contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / n;
    auto y = torch::empty_like(x);
    auto inv = torch::empty({rows}, x.options());  // 1 / max(||x||, eps), kept for the backward
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* ip = inv.data_ptr<float>();
    parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = xp + r * n;
        float ss = 0;
        for (int64_t j = 0; j < n; ++j) {
          ss += xr[j] * xr[j];
        }
        const float s = additive ? 1.0f / (std::sqrt(ss) + static_cast<float>(eps))
                                 : 1.0f / std::max(std::sqrt(ss), static_cast<float>(eps));
        ip[r] = s;
        for (int64_t j = 0; j < n; ++j) {
          yp[r * n + j] = xr[j] * s;
        }
      }
    });
    ctx->save_for_backward({y, inv});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["additive"] = additive;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& y = saved[0];
    const auto& inv = saved[1];
    const float eps = static_cast<float>(ctx->saved_data["eps"].toDouble());
    const bool additive = ctx->saved_data["additive"].toBool();
    auto g = grads[0].contiguous();
    const int64_t n = y.size(-1), rows = y.numel() / n;
    auto gx = torch::empty_like(y);
    const float* yp = y.data_ptr<float>();
    const float* ip = inv.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    float* op = gx.data_ptr<float>();
    parallel_chunks(rows, min_rows_per_thread(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* yr = yp + r * n;
        const float* gr = gp + r * n;
        const float s = ip[r];
        // Clamped: where the norm was clamped to eps, y = x / eps is linear in x. Additive: with
        // y = x / (|x| + eps), dx = s (g - (g.y) y / |y|), and |y| = |x| / (|x| + eps).
        const bool clamped = !additive && s >= 1.0f / eps;
        float dot = 0;
        if (!clamped) {
          float yy = 0;
          for (int64_t j = 0; j < n; ++j) {
            dot += gr[j] * yr[j];
            yy += yr[j] * yr[j];
          }
          if (additive) {
            dot = yy > 0 ? dot / std::sqrt(yy) : 0.0f;
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          op[r * n + j] = (gr[j] - dot * yr[j]) * s;
        }
      }
    });
    return {gx, torch::Tensor(), torch::Tensor()};
  }
};

// softmax_rows.h's rows, with autograd.
struct RowSoftmaxFn : torch::autograd::Function<RowSoftmaxFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input) {
    auto y = softmax_rows(input.contiguous(), torch::kFloat);
    ctx->save_for_backward({y});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {softmax_backward_rows(grads[0].to(torch::kFloat).contiguous(), ctx->get_saved_variables()[0])};
  }
};

}  // namespace

torch::Tensor l2_normalize(const torch::Tensor& x, double eps, bool additive) {
  if (rows_fused(x)) {
    return L2NormalizeFn::apply(x, eps, additive);
  }
  if (additive) {
    return x / (x.norm(2, -1, true) + eps);
  }
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(-1).eps(eps));
}

torch::Tensor row_softmax(const torch::Tensor& x) {
  if (rows_fused(x)) {
    return RowSoftmaxFn::apply(x);
  }
  return torch::softmax(x, -1);
}

}  // namespace moejet::kernels
