#include "moejet/moe/expert_mlp.h"

#include <cmath>

#include <torch/torch.h>

#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/bf16_weights.h"
#include "moejet/kernels/expert_bmm.h"
#include "moejet/kernels/gelu.h"
#include "moejet/kernels/precision.h"
#include "moejet/kernels/tracing.h"
#include "moejet/nn/dropout.h"
#include "moejet/nn/init.h"

namespace moejet::moe {

namespace {

// Holds one batched linear layer's tensors so that they are named "<name>.weight"/"<name>.bias".
struct BatchedLinearParams : torch::nn::Module {
  BatchedLinearParams(int64_t e, int64_t out, int64_t in) {
    weight = register_parameter("weight", torch::empty({e, out, in}));
    bias = register_parameter("bias", torch::zeros({e, out}));
  }
  torch::Tensor weight, bias;
};

// y = x W^T + b over the expert dimension, with a backward that produces dW directly in W's
// [E, out, in] layout. Autograd's own baddbmm backward yields d(W^T) and hands back its
// transposed view, which AccumulateGrad then copies into a contiguous tensor: for the paper's
// 265 M expert parameters that copy alone cost more than the expert GEMMs.
struct BatchedLinearFn : torch::autograd::Function<BatchedLinearFn> {
  // `hidden`: the result feeds the GELU and the next product only, so in bf16 it stays bf16
  // (kernels::ProductOut::compute, as the dense MLP's fc1): no fp32 hidden layer to write, cast
  // and read again, forward or backward.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, bool hidden) {
    // In bf16, backward multiplies by the same rounded operands: saved once (half the memory),
    // not re-cast; the weights' gradient still comes back fp32 for the fp32 master weights.
    const bool bf16 = kernels::gemm_precision() == kernels::Precision::bf16;
    const auto xs = bf16 ? kernels::bf16_batch_operand(x) : x, ws = bf16 ? kernels::bf16_weight(weight) : weight;
    ctx->save_for_backward({xs, ws});
    ctx->saved_data["x_bf16"] = x.scalar_type() == torch::kBFloat16;
    return kernels::expert_bmm(xs, ws.transpose(1, 2), bias, true,
                               hidden ? kernels::ProductOut::compute : kernels::ProductOut::fp32);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    auto gy = grads[0];
    // x's gradient in x's dtype: a bf16 hidden layer's comes back bf16 with no cast in between.
    const auto gx_out = ctx->saved_data["x_bf16"].toBool() ? kernels::ProductOut::compute : kernels::ProductOut::fp32;
    auto gx = kernels::expert_bmm(gy, weight, {}, true, gx_out);  // [E, T, out] x [E, out, in]
    auto gw = kernels::expert_bmm(gy.transpose(1, 2), x);         // [E, out, T] x [E, T, in]
    auto gb = kernels::sum_fp32(gy, 1);                           // [E, out], summed in fp32
    return {gx, gw, gb, torch::Tensor()};
  }
};

}  // namespace

ExpertMlpImpl::ExpertMlpImpl(int64_t num_experts, int64_t dim, int64_t hidden, double drop, const std::string& init)
    : num_experts(num_experts), dim(dim), hidden(hidden), drop(drop) {
  TORCH_CHECK(num_experts > 0 && dim > 0 && hidden > 0, "ExpertMlp: invalid sizes E=", num_experts, " D=", dim,
              " H=", hidden);
  auto fc1 = register_module("fc1", std::make_shared<BatchedLinearParams>(num_experts, hidden, dim));
  auto fc2 = register_module("fc2", std::make_shared<BatchedLinearParams>(num_experts, dim, hidden));
  fc1_weight = fc1->weight;
  fc1_bias = fc1->bias;
  fc2_weight = fc2->weight;
  fc2_bias = fc2->bias;
  TORCH_CHECK(init == "trunc_normal" || init == "kaiming_uniform",
              "ExpertMlp: init must be trunc_normal or kaiming_uniform, got ", init);
  torch::NoGradGuard no_grad;
  for (auto* w : {&fc1_weight, &fc2_weight}) {
    if (init == "trunc_normal") {
      nn::trunc_normal_(*w, 0.02);  // as the dense ViT's Linear layers
    } else {
      const double bound = 1.0 / std::sqrt(static_cast<double>(w->size(1) * w->size(2)));
      w->uniform_(-bound, bound);
    }
  }
}

torch::Tensor ExpertMlpImpl::run(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                                 const torch::Tensor& w2, const torch::Tensor& b2) {
  // [E, T, D] -> [E, T, H] -> [E, T, D]; baddbmm fuses the bias add into the batched GEMM.
  if (kernels::tracing()) {
    auto h = torch::gelu(torch::baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2)));
    return torch::baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2));
  }
  auto h = nn::dropout(kernels::gelu(BatchedLinearFn::apply(x, w1, b1, true)), drop, is_training());
  return nn::dropout(BatchedLinearFn::apply(h, w2, b2, false), drop, is_training());
}

torch::Tensor ExpertMlpImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(0) == num_experts && x.size(2) == dim, "ExpertMlp: expected [", num_experts,
              ", T, ", dim, "], got ", x.sizes());
  return run(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias);
}

torch::Tensor ExpertMlpImpl::forward(const torch::Tensor& x, const torch::Tensor& expert_ids) {
  TORCH_CHECK(expert_ids.dim() == 1 && x.dim() == 3 && x.size(0) == expert_ids.size(0) && x.size(2) == dim,
              "ExpertMlp: expected x [A, T, ", dim, "] for A expert ids, got ", x.sizes(), " and ", expert_ids.sizes());
  // While tracing, the ids are the graph's values: no decision on them here.
  if (expert_ids.size(0) == num_experts && !kernels::tracing()) {
    auto all = torch::arange(num_experts, expert_ids.options());
    if (expert_ids.equal(all)) {
      return forward(x);
    }
  }
  // Consecutive ids (one expert per image at batch 1, Mobile V-MoE's on-device case) are a view of
  // the weights; index_select would copy every active expert's weights on every forward.
  if (kernels::tracing()) {
    return run(x, fc1_weight.index_select(0, expert_ids), fc1_bias.index_select(0, expert_ids),
               fc2_weight.index_select(0, expert_ids), fc2_bias.index_select(0, expert_ids));
  }
  const auto ids = expert_ids.to(torch::kCPU).contiguous();
  const int64_t A = ids.numel(), first = A > 0 ? ids.data_ptr<int64_t>()[0] : 0;
  if (A > 0 && torch::equal(ids, torch::arange(first, first + A, ids.options()))) {
    return run(x, fc1_weight.narrow(0, first, A), fc1_bias.narrow(0, first, A), fc2_weight.narrow(0, first, A),
               fc2_bias.narrow(0, first, A));
  }
  return run(x, fc1_weight.index_select(0, expert_ids), fc1_bias.index_select(0, expert_ids),
             fc2_weight.index_select(0, expert_ids), fc2_bias.index_select(0, expert_ids));
}

torch::Tensor ExpertMlpImpl::forward_groups(const torch::Tensor& x, const std::vector<int64_t>& experts,
                                            const std::vector<int64_t>& rows) {
  TORCH_CHECK(experts.size() == rows.size(), "ExpertMlp: ", experts.size(), " experts but ", rows.size(),
              " row counts");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == dim, "ExpertMlp: expected rows [R, ", dim, "], got ", x.sizes());
  int64_t total = 0;
  for (size_t i = 0; i < experts.size(); ++i) {
    TORCH_CHECK(experts[i] >= 0 && experts[i] < num_experts, "ExpertMlp: expert id ", experts[i], " out of range");
    TORCH_CHECK(rows[i] >= 0, "ExpertMlp: negative row count for expert ", experts[i]);
    total += rows[i];
  }
  TORCH_CHECK(total == x.size(0), "ExpertMlp: the row counts add up to ", total, " but x has ", x.size(0), " rows");
  // split, not narrow (as soft_route): split's backward assembles one gradient of the whole
  // tensor, where each narrow's would zero-fill a full-size one and add it.
  const auto segments = x.split_with_sizes(rows, 0);
  const auto w1 = fc1_weight.split(1, 0), b1 = fc1_bias.split(1, 0), w2 = fc2_weight.split(1, 0),
             b2 = fc2_bias.split(1, 0);
  std::vector<torch::Tensor> outs;
  outs.reserve(experts.size());
  for (size_t i = 0; i < experts.size(); ++i) {
    if (rows[i] == 0) {
      continue;
    }
    const int64_t e = experts[i];
    // One expert's rows, [1, rows, D], through its weights.
    outs.push_back(run(segments[i].unsqueeze(0), w1[e], b1[e], w2[e], b2[e]).squeeze(0));
  }
  return outs.empty() ? x.new_empty({0, dim}) : outs.size() == 1 ? outs[0] : torch::cat(outs, 0);
}

double ExpertMlpImpl::macs(double tokens_per_expert) const {
  return 2.0 * tokens_per_expert * static_cast<double>(num_experts) * static_cast<double>(dim) *
         static_cast<double>(hidden);
}

}  // namespace moejet::moe
