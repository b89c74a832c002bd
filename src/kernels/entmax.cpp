#include "moejet/kernels/entmax.h"
#include "moejet/kernels/tracing.h"

#include <c10/core/WrapDimMinimal.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "moejet/kernels/parallel.h"

namespace moejet::kernels {

namespace {

// Sort-based threshold of one row, over the candidates z_i > -1 only (z = (x - max) / 2;
// tau >= -1 because the largest output (0 - tau)^2 is at most 1, so no other element can be in
// the support). The fallback of entmax15_row below.
template <class T>
T entmax15_tau_sorted(const T* x, T mx, int64_t n, std::vector<T>& z) {
  z.clear();
  for (int64_t i = 0; i < n; ++i) {
    const T zi = (x[i] - mx) / 2;
    if (zi > T(-1)) {
      z.push_back(zi);
    }
  }
  std::sort(z.begin(), z.end(), std::greater<T>());
  T sum = 0, sum_sq = 0, tau = z.empty() ? T(-1) : z[0] - 1;
  for (size_t k = 1; k <= z.size(); ++k) {
    sum += z[k - 1];
    sum_sq += z[k - 1] * z[k - 1];
    const T rho = static_cast<T>(k);
    const T mean = sum / rho;
    const T ss = sum_sq - rho * mean * mean;
    const T delta = std::max(T(0), (1 - ss) / rho);
    const T tau_k = mean - std::sqrt(delta);
    if (tau_k <= z[k - 1]) {
      tau = tau_k;  // the support condition holds for a prefix of the sorted values
    } else {
      break;
    }
  }
  return tau;
}

// 16-byte vectors of GCC/Clang vector extensions: SSE2 on any x86-64, NEON on ARM.
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

// Sums over S = {i : z_i > t} with z = (x - mx) / 2: |S|, sum z, sum z^2 and min z (0 if empty).
template <class T>
struct SupportStats {
  T k = 0, s1 = 0, s2 = 0, zmin = 0;
};

// Adds elements [begin, end) to r: the whole pass for double, the vector loop's tail for float.
template <class T>
void add_support_stats(const T* x, int64_t begin, int64_t end, T mx, T t, SupportStats<T>& r) {
  for (int64_t i = begin; i < end; ++i) {
    const T zi = (x[i] - mx) / 2;
    if (zi > t) {
      r.k += 1;
      r.s1 += zi;
      r.s2 += zi * zi;
      r.zmin = std::min(r.zmin, zi);
    }
  }
}

template <class T>
SupportStats<T> support_stats(const T* x, int64_t n, T mx, T t) {
  SupportStats<T> r;
  add_support_stats(x, 0, n, mx, t, r);
  return r;
}

// The float pass is the hot loop (one per Newton step, ~4 per row): 16-byte vectors of GCC/Clang
// vector extensions (SSE2 on any x86-64, NEON on ARM), branch-free, two accumulator sets.
template <>
SupportStats<float> support_stats<float>(const float* x, int64_t n, float mx, float t) {
  const v4f vmx = v4f{} + mx, vt = v4f{} + t, zero = v4f{};
  v4f s1[2] = {zero, zero}, s2[2] = {zero, zero}, mn[2] = {zero, zero};
  v4i k[2] = {v4i{}, v4i{}};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int h = 0; h < 2; ++h) {
      v4f xi;
      std::memcpy(&xi, x + i + 4 * h, sizeof(xi));
      const v4f zi = (xi - vmx) * 0.5f;
      const v4i in = zi > vt;  // all-ones where in S
      const v4f zin = (v4f)(in & (v4i)zi);
      k[h] -= in;
      s1[h] += zin;
      s2[h] += zin * zin;
      mn[h] = zin < mn[h] ? zin : mn[h];
    }
  }
  SupportStats<float> r;
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      r.k += static_cast<float>(k[h][j]);
      r.s1 += s1[h][j];
      r.s2 += s2[h][j];
      r.zmin = std::min(r.zmin, mn[h][j]);
    }
  }
  add_support_stats(x, i, n, mx, t, r);
  return r;
}

template <class T>
T row_max(const T* x, int64_t n) {
  T mx = x[0];
  for (int64_t i = 1; i < n; ++i) {
    mx = std::max(mx, x[i]);
  }
  return mx;
}

template <>
float row_max<float>(const float* x, int64_t n) {
  if (n < 8) {
    return *std::max_element(x, x + n);
  }
  v4f m[2];
  std::memcpy(&m[0], x, sizeof(v4f));
  std::memcpy(&m[1], x + 4, sizeof(v4f));
  int64_t i = 8;
  for (; i + 8 <= n; i += 8) {
    for (int h = 0; h < 2; ++h) {
      v4f xi;
      std::memcpy(&xi, x + i + 4 * h, sizeof(xi));
      m[h] = xi > m[h] ? xi : m[h];
    }
  }
  float mx = m[0][0];
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      mx = std::max(mx, m[h][j]);
    }
  }
  for (; i < n; ++i) {
    mx = std::max(mx, x[i]);
  }
  return mx;
}

// r_i = [(x_i - mx) / 2 - tau]_+ and y_i = r_i^2; r = sqrt(y) is what the backward needs.
template <class T>
void row_output_range(const T* x, T* y, T* r, int64_t begin, int64_t end, T mx, T tau) {
  for (int64_t i = begin; i < end; ++i) {
    const T d = std::max(T(0), (x[i] - mx) / 2 - tau);
    y[i] = d * d;
    r[i] = d;
  }
}

template <class T>
void row_output(const T* x, T* y, T* r, int64_t n, T mx, T tau) {
  row_output_range(x, y, r, 0, n, mx, tau);
}

template <>
void row_output<float>(const float* x, float* y, float* r, int64_t n, float mx, float tau) {
  const v4f vmx = v4f{} + mx, vtau = v4f{} + tau;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    v4f xi;
    std::memcpy(&xi, x + i, sizeof(xi));
    v4f d = (xi - vmx) * 0.5f - vtau;
    d = (v4f)((d > v4f{}) & (v4i)d);
    const v4f yi = d * d;
    std::memcpy(y + i, &yi, sizeof(yi));
    std::memcpy(r + i, &d, sizeof(d));
  }
  row_output_range(x, y, r, i, n, mx, tau);
}

// Backward of one row: dx = r * (g - <g, r> / sum(r)), with r = sqrt(y).
template <class T>
void row_backward(const T* g, const T* r, T* dx, int64_t n) {
  T gr = 0, rs = 0;
  for (int64_t i = 0; i < n; ++i) {
    gr += g[i] * r[i];
    rs += r[i];
  }
  const T q = gr / rs;
  for (int64_t i = 0; i < n; ++i) {
    dx[i] = r[i] * (g[i] - q);
  }
}

template <>
void row_backward<float>(const float* g, const float* r, float* dx, int64_t n) {
  v4f gr4 = v4f{}, rs4 = v4f{};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    v4f gi, ri;
    std::memcpy(&gi, g + i, sizeof(gi));
    std::memcpy(&ri, r + i, sizeof(ri));
    gr4 += gi * ri;
    rs4 += ri;
  }
  float gr = gr4[0] + gr4[1] + gr4[2] + gr4[3], rs = rs4[0] + rs4[1] + rs4[2] + rs4[3];
  for (int64_t j = i; j < n; ++j) {
    gr += g[j] * r[j];
    rs += r[j];
  }
  const float q = gr / rs;
  const v4f vq = v4f{} + q;
  for (i = 0; i + 4 <= n; i += 4) {
    v4f gi, ri;
    std::memcpy(&gi, g + i, sizeof(gi));
    std::memcpy(&ri, r + i, sizeof(ri));
    const v4f di = ri * (gi - vq);
    std::memcpy(dx + i, &di, sizeof(di));
  }
  for (; i < n; ++i) {
    dx[i] = r[i] * (g[i] - q);
  }
}

// CPU fast path for one contiguous row of length n, without sorting. A sort per row (294 slots
// per token in the paper's SpheroMoE, most of them candidates at the initial temperature) was the
// largest single cost of a SpheroMoE layer on CPU.
//
// tau is the root of sum_i [z_i - t]_+^2 = 1, i.e. of phi(t) = ||[z - t]_+||_2 - 1, which is
// convex (a norm of convex, non-negative functions) and decreasing. From t = -1 <= tau, each pass
// sums over S = {z_i > t} (a superset of the support, since t <= tau):
//  - the closed-form root t' of sum_{i in S} (z_i - t)^2 = 1 (left of S's mean) is >= tau, and
//    equals tau exactly when t' <= min_S z, i.e. when S is the support: then we stop;
//  - otherwise a Newton step on phi moves t up, still <= tau by convexity, and S shrinks.
// phi is nearly linear (exactly so while the support has one value), so about four passes
// suffice on SpheroMoE logits; a capped count falls back to the sort.
template <class T>
void entmax15_row(const T* x, T* y, T* r, int64_t n, std::vector<T>& z) {
  const T mx = row_max(x, n);
  T t = -1, tau = 0;
  bool found = false;
  for (int pass = 0; pass < 32 && !found; ++pass) {
    const auto [k, s1, s2, zmin] = support_stats(x, n, mx, t);
    const T mean = s1 / k;
    const T delta = (1 - (s2 - s1 * mean)) / k;
    if (delta >= 0) {
      const T root = mean - std::sqrt(delta);
      if (root <= zmin) {
        tau = std::max(root, t);
        found = true;
        break;
      }
    }
    const T norm = std::sqrt(std::max(T(0), s2 - 2 * t * s1 + k * t * t));  // ||[z - t]_+||
    const T next = t + (norm - 1) * norm / (s1 - k * t);
    if (!(next > t)) {
      break;  // no progress in this precision: let the sort decide
    }
    t = next;
  }
  if (!found) {
    tau = entmax15_tau_sorted(x, mx, n, z);
  }
  row_output(x, y, r, n, mx, tau);
}

// Rows along `dim` made contiguous (a no-op for the last dim). Returns y and sqrt(y), both with
// `dim` moved last.
std::pair<torch::Tensor, torch::Tensor> entmax15_cpu(const torch::Tensor& input, int64_t dim) {
  auto x = input.transpose(dim, -1).contiguous();
  auto y = torch::empty_like(x);
  auto root = torch::empty_like(x);
  const int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(n, 1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "entmax15_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* rp = root.data_ptr<scalar_t>();
    parallel_chunks(rows, 256, [&](int64_t r0, int64_t r1) {
      std::vector<scalar_t> z;
      z.reserve(static_cast<size_t>(n));
      for (int64_t r = r0; r < r1; ++r) {
        entmax15_row(xp + r * n, yp + r * n, rp + r * n, n, z);
      }
    });
  });
  return {y, root};
}

// dx for grad `g` and sqrt(y) `root`, both laid out with the entmax dim last.
torch::Tensor entmax15_backward_cpu(const torch::Tensor& grad, const torch::Tensor& root) {
  auto g = grad.contiguous();
  auto dx = torch::empty_like(root);
  const int64_t n = root.size(-1), rows = root.numel() / std::max<int64_t>(n, 1);
  AT_DISPATCH_FLOATING_TYPES(root.scalar_type(), "entmax15_backward_cpu", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* rp = root.data_ptr<scalar_t>();
    scalar_t* dp = dx.data_ptr<scalar_t>();
    parallel_chunks(rows, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        row_backward(gp + r * n, rp + r * n, dp + r * n, n);
      }
    });
  });
  return dx;
}

}  // namespace

torch::Tensor entmax15_generic(const torch::Tensor& input, int64_t dim) {
  dim = c10::maybe_wrap_dim(dim, input.dim());
  // Shifting by the max leaves the result unchanged (tau absorbs it) and keeps squares finite.
  auto x = (input - std::get<0>(input.max(dim, /*keepdim=*/true))) / 2;
  auto sorted = std::get<0>(x.sort(dim, /*descending=*/true));
  const int64_t n = x.size(dim);
  std::vector<int64_t> shape(x.dim(), 1);
  shape[dim] = n;
  auto rho = torch::arange(1, n + 1, x.options()).view(shape);
  auto mean = sorted.cumsum(dim) / rho;
  auto mean_sq = (sorted * sorted).cumsum(dim) / rho;
  // For support size rho, tau solves sum_{i<=rho} (z_i - tau)^2 = 1 in closed form; clamping
  // the discriminant only affects sizes beyond the true support, which the test below rejects.
  auto ss = rho * (mean_sq - mean * mean);
  auto delta = ((1 - ss) / rho).clamp_min(0);
  auto tau = mean - delta.sqrt();
  auto support = (tau <= sorted).sum(dim, /*keepdim=*/true);
  auto tau_star = tau.gather(dim, support - 1);
  auto y = (x - tau_star).clamp_min(0).pow(2);
  return y;
}

namespace {

// The entmax package's Entmax15Function. The analytic Jacobian is cheaper and more accurate than
// differentiating through sort/cumsum/gather, and matches the reference implementation exactly.
struct Entmax15Function : public torch::autograd::Function<Entmax15Function> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, int64_t dim) {
    const bool cpu_kernel =
        input.is_cpu() && (input.scalar_type() == torch::kFloat || input.scalar_type() == torch::kDouble);
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["cpu_kernel"] = cpu_kernel;
    if (cpu_kernel) {
      // The kernel also writes sqrt(y), saved for the backward in the kernel's row layout.
      auto [y, root] = entmax15_cpu(input, dim);
      ctx->save_for_backward({root});
      return y.transpose(dim, -1);
    }
    auto y = entmax15_generic(input, dim);
    ctx->save_for_backward({y});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const int64_t dim = ctx->saved_data["dim"].toInt();
    if (ctx->saved_data["cpu_kernel"].toBool()) {
      auto root = ctx->get_saved_variables()[0];
      auto dx = entmax15_backward_cpu(grad_outputs[0].transpose(dim, -1), root);
      return {dx.transpose(dim, -1), torch::Tensor()};
    }
    auto y = ctx->get_saved_variables()[0];
    // sqrt(y) = 1 / g''(y) on the support (zero off it), the Jacobian's diagonal part.
    auto gppr = y.sqrt();
    auto dx = grad_outputs[0] * gppr;
    auto q = dx.sum(dim, /*keepdim=*/true) / gppr.sum(dim, /*keepdim=*/true);
    dx = dx - q * gppr;
    return {dx, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor entmax15(const torch::Tensor& x, int64_t dim) {
  TORCH_CHECK(x.defined() && x.dim() >= 1, "entmax15: expected a tensor with at least 1 dim");
  TORCH_CHECK(x.is_floating_point(), "entmax15: expected a floating-point tensor, got ", x.scalar_type());
  dim = c10::maybe_wrap_dim(dim, x.dim());
  TORCH_CHECK(x.size(dim) > 0, "entmax15: dim ", dim, " of ", x.sizes(), " is empty");
  if (tracing()) {
    return entmax15_generic(x, dim);
  }
  return Entmax15Function::apply(x, dim);
}

}  // namespace moejet::kernels
