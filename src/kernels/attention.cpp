#include "moejet/kernels/attention.h"

#include <torch/torch.h>

#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/tracing.h"
#include "softmax_rows.h"

namespace moejet::kernels {

namespace {

// q, k or v of every head where it lies in qkv: [B, N, 3, H, hd] -> [B, H, N, hd].
torch::Tensor heads(const torch::Tensor& qkv5, int64_t which) {
  return qkv5.select(2, which).permute({0, 2, 1, 3});
}

struct AttentionFn : torch::autograd::Function<AttentionFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv_in, int64_t num_heads,
                               double scale) {
    const auto qkv = qkv_in.contiguous();
    const int64_t B = qkv.size(0), N = qkv.size(1), D = qkv.size(2) / 3, hd = D / num_heads;
    const auto type = qkv.scalar_type();
    const auto qkv5 = qkv.view({B, N, 3, num_heads, hd});
    const auto q = heads(qkv5, 0), k = heads(qkv5, 1), v = heads(qkv5, 2);
    auto scores = torch::empty({B, num_heads, N, N}, qkv.options().dtype(torch::kFloat));
    onednn_matmul_out(q, k.transpose(-2, -1), {}, scores, scale);
    // The probabilities only feed products: kept in the products' dtype.
    const auto probs = softmax_rows(scores, type);
    auto out = torch::empty({B, N, num_heads, hd}, qkv.options());
    onednn_matmul_out(probs, v, {}, out.permute({0, 2, 1, 3}));
    ctx->save_for_backward({qkv, probs});
    ctx->saved_data["num_heads"] = num_heads;
    ctx->saved_data["scale"] = scale;
    return out.view({B, N, D});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& qkv = saved[0];
    const auto& probs = saved[1];
    const int64_t num_heads = ctx->saved_data["num_heads"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t B = qkv.size(0), N = qkv.size(1), D = qkv.size(2) / 3, hd = D / num_heads;
    const auto type = qkv.scalar_type();
    const auto qkv5 = qkv.view({B, N, 3, num_heads, hd});
    const auto q = heads(qkv5, 0), k = heads(qkv5, 1), v = heads(qkv5, 2);
    const auto g = grads[0].to(type).contiguous().view({B, N, num_heads, hd}).permute({0, 2, 1, 3});
    auto dprobs = torch::empty({B, num_heads, N, N}, qkv.options().dtype(torch::kFloat));
    onednn_matmul_out(g, v.transpose(-2, -1), {}, dprobs);
    const auto dscores = softmax_backward_rows(dprobs, probs);
    auto dqkv = torch::empty({B, N, 3, num_heads, hd}, qkv.options());
    // scores = scale q k^T: the scale goes into both of its gradients' products.
    onednn_matmul_out(dscores, k, {}, heads(dqkv, 0), scale);
    onednn_matmul_out(dscores.transpose(-2, -1), q, {}, heads(dqkv, 1), scale);
    onednn_matmul_out(probs.transpose(-2, -1), g, {}, heads(dqkv, 2));
    return {dqkv.view({B, N, 3 * D}), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_attention(const torch::Tensor& qkv) {
  return !tracing() && onednn_available() && qkv.defined() && qkv.is_cpu() && qkv.dim() == 3 &&
         (qkv.scalar_type() == torch::kFloat || qkv.scalar_type() == torch::kBFloat16) && qkv.numel() > 0;
}

torch::Tensor attention(const torch::Tensor& qkv, int64_t num_heads, double scale) {
  TORCH_CHECK(qkv.dim() == 3 && num_heads > 0 && qkv.size(2) % (3 * num_heads) == 0,
              "attention: expected qkv [B, N, 3 * heads * head_dim] for ", num_heads, " heads, got ", qkv.sizes());
  TORCH_CHECK(fused_attention(qkv), "attention: no fused kernel for ", qkv.dtype(), " on ", qkv.device(),
              " (check fused_attention first)");
  return AttentionFn::apply(qkv, num_heads, scale);
}

}  // namespace moejet::kernels
