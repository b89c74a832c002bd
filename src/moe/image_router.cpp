#include "moejet/moe/image_router.h"

#include <torch/torch.h>

#include "moejet/nn/products.h"

namespace moejet::moe {

namespace F = torch::nn::functional;

ImageRouterImpl::ImageRouterImpl(const ImageRouterOptions& o) : options(o) {
  TORCH_CHECK(o.dim > 0 && o.num_experts > 0 && o.k >= 1 && o.k <= o.num_experts,
              "ImageRouter: invalid options dim=", o.dim, " experts=", o.num_experts, " k=", o.k);
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim})));
  fc = register_module("fc", torch::nn::Linear(o.dim, o.num_experts));
}

ImageRouting ImageRouterImpl::forward(const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 3 && tokens.size(2) == options.dim, "ImageRouter: expected [B, T, ", options.dim,
              "], got ", tokens.sizes());
  auto pooled = options.pool_class_token ? tokens.select(1, 0) : tokens.slice(1, options.prefix_tokens).mean(1);
  ImageRouting r;
  r.logits = nn::linear(*fc, norm(pooled));
  auto scores = r.logits;
  if (is_training() && options.noise_std > 0) {
    scores = scores + torch::randn_like(scores) * options.noise_std;
  }
  auto gates = torch::softmax(scores, -1);
  auto order = std::get<1>(gates.detach().sort(/*stable=*/true, -1, /*descending=*/true));
  r.experts = order.narrow(1, 0, options.k).contiguous();
  r.weights = gates.gather(1, r.experts);
  const int64_t e = options.num_experts;
  if (options.balance_loss_weight > 0) {
    auto f = F::one_hot(r.experts.select(1, 0), e).to(gates.scalar_type()).mean(0);
    r.aux_loss = options.balance_loss_weight * static_cast<double>(e) * (f * gates.mean(0)).sum();
  } else {
    r.aux_loss = torch::zeros({}, tokens.options());
  }
  return r;
}

}  // namespace moejet::moe
