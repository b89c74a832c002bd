#pragma once
// The MoE block of Mobile V-MoE: E expert MLPs of which each image uses the k that the per-image
// router (image_router.h) chose for it; the same choice holds in every MoE block of the model.
// Images are grouped by expert and each active expert runs once, as one batched GEMM over the
// active experts ([A, images * tokens, D], padded to the busiest expert). Experts that no image
// of the batch chose are neither read nor computed: at batch size 1 exactly k experts run, which
// is the inference saving the paper is about. Output: sum over the k choices of gate * expert(x).

#include <cstdint>
#include <string>

#include "moejet/moe/expert_mlp.h"
#include "moejet/moe/image_router.h"
#include "moejet/moe/moe_layer.h"

namespace moejet::moe {

struct PerImageMoeOptions {
  int64_t dim = 0;
  int64_t hidden = 0;
  int64_t num_experts = 10;
  int64_t k = 1;
  double expert_drop = 0.0;
  std::string expert_init = "trunc_normal";  ///< see ExpertMlp
};

class PerImageMoe : public MoeLayer {
 public:
  explicit PerImageMoe(const PerImageMoeOptions& options);
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

  PerImageMoeOptions options;
  ExpertMlp experts{nullptr};

 private:
  ImageRouting routing_;
  bool report_aux_loss_ = false;
};

}  // namespace moejet::moe
