#pragma once
// The MoE block of Mobile V-MoE: E expert MLPs of which each image uses the k that the per-image
// router (image_router.h) chose for it; the same choice holds in every MoE block of the model.
// Images are sorted by expert and each active expert runs once on exactly its images' tokens
// (ExpertMlp::forward_groups: no padding to the busiest expert). Experts that no image
// of the batch chose are neither read nor computed: at batch size 1 exactly k experts run, which
// is the inference saving the paper is about. Output: sum over the k choices of gate * expert(x).

#include <cstdint>
#include <string>

#include "moejet/moe/expert_mlp.h"
#include "moejet/moe/image_router.h"
#include "moejet/moe/layer_options.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

/// model.moe with "type": "image": the MoE blocks and the model's per-image router.
struct PerImageMoeOptions {
  static constexpr const char* kType = "image";
  int64_t num_experts = 8;
  double mlp_ratio = 4.0;            ///< expert hidden = dim * mlp_ratio
  int64_t top_k = 2;                 ///< experts per image
  double router_noise = 0.0;         ///< std of the noise on the router's logits, in training
  double aux_loss_weight = 0.01;     ///< weight of the router's balance loss over images
  double expert_drop = 0.0;          ///< dropout inside the experts
  std::string expert_init = "auto";  ///< see ExpertMlp; auto = trunc_normal (timm's Linear)
  MOEJET_CONFIG_FIELDS(num_experts, mlp_ratio, top_k, router_noise, aux_loss_weight, expert_drop, expert_init)

  void validate() const;
};

class PerImageMoe : public MoeLayer {
 public:
  /// The layer for tokens of width `dim`.
  PerImageMoe(const PerImageMoeOptions& options, int64_t dim);
  /// Routing for the next forward (set by the model from its router).
  void set_routing(const ImageRouting& routing, bool report_aux_loss);
  torch::Tensor forward(const torch::Tensor& x) override;  ///< [B, N, D] -> [B, N, D]
  double macs(int64_t tokens) const override;              ///< per image: k experts
  std::string kind() const override {
    return "image";
  }
  std::vector<std::pair<std::string, ExpertMlp>> expert_groups() const override {
    return {{"experts", experts}};
  }

  std::string describe() const override;

  PerImageMoeOptions options;
  int64_t dim = 0, hidden = 0;
  ExpertMlp experts{nullptr};

 private:
  ImageRouting routing_;
  bool report_aux_loss_ = false;
};

}  // namespace moejet::moe
