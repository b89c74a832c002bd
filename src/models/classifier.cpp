#include "moejet/models/classifier.h"

#include "moejet/moe/moe_factory.h"
#include "moejet/moe/per_image_moe.h"

namespace moejet::models {

void ImageClassifierImpl::install_moe_layers(
    const moe::MoeConfig& moe, const std::function<void(int64_t, std::shared_ptr<nn::FeedForward>)>& set_mlp) {
  const auto blocks = moe.block_indices(num_blocks());
  for (size_t i = 0; i < blocks.size(); ++i) {
    // The block's depth (and position among the MoE blocks) sets its drop-path rate.
    auto layer = moe::make_moe_layer(moe, block_dim(blocks[i]), blocks[i], num_blocks(), static_cast<int64_t>(i),
                                     static_cast<int64_t>(blocks.size()));
    set_mlp(blocks[i], layer);
    moe_layer_list.emplace_back(blocks[i], layer);
  }
}

torch::Tensor ImageClassifierImpl::moe_aux_loss() const {
  torch::Tensor sum;
  for (const auto& entry : moe_layer_list) {
    const auto& a = entry.second->last_aux_loss;
    if (a.defined()) {
      sum = sum.defined() ? sum + a : a;
    }
  }
  return sum;
}

void ImageClassifierImpl::add_image_router(const moe::MoeConfig& moe, int64_t dim, int64_t prefix_tokens,
                                           bool pool_class_token) {
  const auto& o = moe.get<moe::PerImageMoeOptions>();
  moe::ImageRouterOptions ro;
  ro.dim = dim;
  ro.num_experts = o.num_experts;
  ro.k = o.top_k;
  ro.prefix_tokens = prefix_tokens;
  ro.pool_class_token = pool_class_token;
  ro.noise_std = o.router_noise;
  ro.balance_loss_weight = o.aux_loss_weight;
  router = register_module("router", moe::ImageRouter(ro));
}

void ImageClassifierImpl::route_images(const torch::Tensor& tokens) {
  last_routing = router(tokens);
  bool first = true;  // one balance loss per model, reported by the first layer
  for (auto& entry : moe_layer_list) {
    std::static_pointer_cast<moe::PerImageMoe>(entry.second)->set_routing(last_routing, first);
    first = false;
  }
}

int64_t count_parameters(const torch::nn::Module& module, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) {
    if (!trainable_only || p.requires_grad()) {
      n += p.numel();
    }
  }
  return n;
}

double total_macs(const ImageClassifierImpl& model) {
  double macs = 0;
  for (const auto& layer : model.macs_by_layer()) {
    macs += layer.second;
  }
  return macs;
}

}  // namespace moejet::models
