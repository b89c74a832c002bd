#include "moejet/kernels/attention.h"

#include <torch/torch.h>

#include "moejet/kernels/onednn_matmul.h"
#include "moejet/kernels/tracing.h"
#include "softmax_rows.h"

namespace moejet::kernels {

AttentionHeads attention_heads_for(torch::ScalarType type) {
  // ViT-T's attention at batch 32, forward + backward, 2 threads (`moejet_bench
  // --benchmark_filter=Attention_`, 2026-12-03): on a Xeon with AMX, bf16 25.4 ms with the heads in
  // place (oneDNN's gemm:jit, without AMX) against 8.1 ms copied (its AMX brgemm); fp32 14.5 ms in
  // place against 17.8 ms copied. On a Zen 5 without AMX, bf16 in place took 6.7 ms.
  return type == torch::kBFloat16 && onednn_amx() ? AttentionHeads::copied : AttentionHeads::in_place;
}

namespace {

// q, k and v of every head, [3, B, H, N, hd]: a view where they lie in qkv [B, N, 3, H, hd], or
// a contiguous copy.
torch::Tensor heads(const torch::Tensor& qkv5, bool copied) {
  auto h = qkv5.permute({2, 0, 3, 1, 4});
  return copied ? h.contiguous() : h;
}

struct AttentionFn : torch::autograd::Function<AttentionFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv_in, int64_t num_heads,
                               double scale, bool copied) {
    const auto qkv = qkv_in.contiguous();
    const int64_t B = qkv.size(0), N = qkv.size(1), D = qkv.size(2) / 3, hd = D / num_heads;
    const auto type = qkv.scalar_type();
    const auto qkvh = heads(qkv.view({B, N, 3, num_heads, hd}), copied);
    const auto q = qkvh[0], k = qkvh[1], v = qkvh[2];
    auto scores = torch::empty({B, num_heads, N, N}, qkv.options().dtype(torch::kFloat));
    onednn_matmul_out(q, k.transpose(-2, -1), {}, scores, scale);
    // The probabilities only feed products: kept in the products' dtype.
    const auto probs = softmax_rows(scores, type);
    // In place, the heads' outputs are written merged, [B, N, H, hd]; copied, merged by a copy.
    auto out = torch::empty({B, N, num_heads, hd}, qkv.options());
    if (copied) {
      auto out_h = torch::empty({B, num_heads, N, hd}, qkv.options());
      onednn_matmul_out(probs, v, {}, out_h);
      out.copy_(out_h.permute({0, 2, 1, 3}));
    } else {
      onednn_matmul_out(probs, v, {}, out.permute({0, 2, 1, 3}));
    }
    ctx->save_for_backward({qkvh, probs});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["copied"] = copied;
    return out.view({B, N, D});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& qkvh = saved[0];
    const auto& probs = saved[1];
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool copied = ctx->saved_data["copied"].toBool();
    const int64_t B = qkvh.size(1), H = qkvh.size(2), N = qkvh.size(3), hd = qkvh.size(4);
    const auto q = qkvh[0], k = qkvh[1], v = qkvh[2];
    auto g = grads[0].to(qkvh.scalar_type()).contiguous().view({B, N, H, hd}).permute({0, 2, 1, 3});
    if (copied) {
      g = g.contiguous();
    }
    auto dprobs = torch::empty({B, H, N, N}, qkvh.options().dtype(torch::kFloat));
    onednn_matmul_out(g, v.transpose(-2, -1), {}, dprobs);
    const auto dscores = softmax_backward_rows(dprobs, probs);
    // The gradient of qkv [B, N, 3, H, hd]: written in place through a view of its heads, or
    // into contiguous heads and then copied.
    auto dqkv = torch::empty({B, N, 3, H, hd}, qkvh.options());
    const auto dqkvh = copied ? torch::empty({3, B, H, N, hd}, qkvh.options()) : heads(dqkv, false);
    // scores = scale q k^T: the scale goes into both of its gradients' products.
    onednn_matmul_out(dscores, k, {}, dqkvh[0], scale);
    onednn_matmul_out(dscores.transpose(-2, -1), q, {}, dqkvh[1], scale);
    onednn_matmul_out(probs.transpose(-2, -1), g, {}, dqkvh[2]);
    if (copied) {
      dqkv.copy_(dqkvh.permute({1, 3, 0, 2, 4}));
    }
    return {dqkv.view({B, N, 3 * H * hd}), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_attention(const torch::Tensor& qkv) {
  return !tracing() && onednn_available() && qkv.defined() && qkv.is_cpu() && qkv.dim() == 3 &&
         (qkv.scalar_type() == torch::kFloat || qkv.scalar_type() == torch::kBFloat16) && qkv.numel() > 0;
}

torch::Tensor attention(const torch::Tensor& qkv, int64_t num_heads, double scale, AttentionHeads layout) {
  TORCH_CHECK(qkv.dim() == 3 && num_heads > 0 && qkv.size(2) % (3 * num_heads) == 0,
              "attention: expected qkv [B, N, 3 * heads * head_dim] for ", num_heads, " heads, got ", qkv.sizes());
  TORCH_CHECK(fused_attention(qkv), "attention: no fused kernel for ", qkv.dtype(), " on ", qkv.device(),
              " (check fused_attention first)");
  if (layout == AttentionHeads::automatic) {
    layout = attention_heads_for(qkv.scalar_type());
  }
  return AttentionFn::apply(qkv, num_heads, scale, layout == AttentionHeads::copied);
}

}  // namespace moejet::kernels
