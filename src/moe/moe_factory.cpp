#include "moejet/moe/moe_factory.h"

#include "moejet/core/error.h"

namespace moejet::moe {

namespace {

struct LayerBuilder {
  int64_t dim, block, depth, position, count;

  std::shared_ptr<MoeLayer> operator()(const NoMoeOptions&) const {
    throw ConfigError("model.moe.type: \"none\" has no MoE layer");
  }
  std::shared_ptr<MoeLayer> operator()(const SoftMoeOptions& o) const {
    return std::make_shared<SoftMoe>(
        o, dim, moe_drop_path_rate(o.expert_drop_path, o.expert_drop_path_mode, block, depth, position, count));
  }
  std::shared_ptr<MoeLayer> operator()(const SpheroMoeOptions& o) const {
    return std::make_shared<SpheroMoe>(
        o, dim, moe_drop_path_rate(o.expert_drop_path, o.expert_drop_path_mode, block, depth, position, count));
  }
  std::shared_ptr<MoeLayer> operator()(const TopKMoeOptions& o) const {
    return std::make_shared<TopKMoe>(o, dim);
  }
  std::shared_ptr<MoeLayer> operator()(const PerImageMoeOptions& o) const {
    return std::make_shared<PerImageMoe>(o, dim);
  }
};

}  // namespace

std::shared_ptr<MoeLayer> make_moe_layer(const MoeConfig& c, int64_t dim, int64_t block, int64_t depth,
                                         int64_t position, int64_t count) {
  return std::visit(LayerBuilder{dim, block, depth, position, count}, c.options);
}

}  // namespace moejet::moe
