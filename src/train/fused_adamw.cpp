#include "moejet/train/fused_adamw.h"

#include "moejet/kernels/adamw.h"
#include "moejet/kernels/bf16_weights.h"
#include "moejet/kernels/parallel.h"

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/torch.h>

namespace moejet::train {

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    auto& opt = static_cast<torch::optim::AdamWOptions&>(group.options());
    const double lr = opt.lr(), wd = opt.weight_decay(), eps = opt.eps();
    const double beta1 = std::get<0>(opt.betas()), beta2 = std::get<1>(opt.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) {
        continue;
      }
      const auto& grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(), "FusedAdamW does not support sparse gradients");
      const auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(0);
        st->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        st->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        if (opt.amsgrad()) {
          st->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        }
        it = state_.emplace(key, std::move(st)).first;
      }
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      st.step(st.step() + 1);
      const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(st.step()));
      const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(st.step()));
      const double step_size = lr / bc1;
      auto& m = st.exp_avg();
      auto& v = st.exp_avg_sq();
      const bool fused = p.is_cpu() && p.scalar_type() == torch::kFloat && p.is_contiguous() && grad.is_contiguous() &&
                         grad.scalar_type() == torch::kFloat && m.is_contiguous() && v.is_contiguous() &&
                         !opt.amsgrad();
      if (!fused) {
        // Reference path, op for op as torch::optim::AdamW.
        if (wd != 0) {
          p.mul_(1 - lr * wd);
        }
        m.mul_(beta1).add_(grad, 1 - beta1);
        v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
        torch::Tensor denom;
        if (opt.amsgrad()) {
          auto& vmax = st.max_exp_avg_sq();
          torch::max_out(vmax, v, vmax);
          denom = (vmax.sqrt() / std::sqrt(bc2)).add_(eps);
        } else {
          denom = (v.sqrt() / std::sqrt(bc2)).add_(eps);
        }
        p.addcdiv_(m, denom, -step_size);
        continue;
      }
      kernels::AdamWCoefficients c{};
      c.decay = static_cast<float>(1.0 - lr * wd);
      c.beta1 = static_cast<float>(beta1);
      c.beta2 = static_cast<float>(beta2);
      c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
      c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
      c.inv_sqrt_bias_correction2 = static_cast<float>(1.0 / std::sqrt(bc2));
      c.eps = static_cast<float>(eps);
      c.step_size = static_cast<float>(step_size);
      float* pp = p.data_ptr<float>();
      const float* gp = grad.data_ptr<float>();
      float* mp = m.data_ptr<float>();
      float* vp = v.data_ptr<float>();
      // p's copy for bf16 products, when one is kept, written here with p at hand: the forward then
      // does not read p again to convert it.
      uint16_t* pb = kernels::bf16_weight_to_write(p);
      auto update = [=](int64_t begin, int64_t end) { kernels::adamw_update(pp, gp, mp, vp, begin, end, c, pb); };
      kernels::parallel_chunks(p.numel(), int64_t{1} << 18, update);
      // Written through its pointer, which ATen does not see: bumped as an in-place op would, so
      // that a graph that saved p refuses it and a bf16 copy not written above is made again.
      torch::autograd::impl::bump_version(p);
      if (pb != nullptr) {
        kernels::bf16_weight_written(p);
      }
    }
  }
  return loss;
}

}  // namespace moejet::train
