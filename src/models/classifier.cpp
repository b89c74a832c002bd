#include "moejet/models/classifier.h"

#include "moejet/moe/per_image_moe.h"

namespace moejet::models {

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

}  // namespace moejet::models
