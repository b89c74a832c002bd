#include "moejet/moe/entmax.h"

#include <c10/core/WrapDimMinimal.h>
#include <torch/torch.h>

#include <vector>

namespace moejet::moe {

namespace {

// The entmax package's Entmax15Function. The analytic Jacobian is cheaper and more accurate than
// differentiating through sort/cumsum/gather, and matches the reference implementation exactly.
struct Entmax15Function : public torch::autograd::Function<Entmax15Function> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               int64_t dim) {
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
    ctx->save_for_backward({y});
    ctx->saved_data["dim"] = dim;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto y = ctx->get_saved_variables()[0];
    const int64_t dim = ctx->saved_data["dim"].toInt();
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
  TORCH_CHECK(x.is_floating_point(), "entmax15: expected a floating-point tensor, got ",
              x.scalar_type());
  dim = c10::maybe_wrap_dim(dim, x.dim());
  TORCH_CHECK(x.size(dim) > 0, "entmax15: dim ", dim, " of ", x.sizes(), " is empty");
  return Entmax15Function::apply(x, dim);
}

}  // namespace moejet::moe
