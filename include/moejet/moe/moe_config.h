#pragma once
// Which blocks of a model are MoE and with what layer: the "moe" object of a model config.
//
//   "moe": {"type": "sphero", "layers": [6, 7, 8, 9, 10, 11],
//           "core_experts": 98, "universal_experts": 196, "slots_per_expert": 1,
//           "core_mlp_ratio": 4.0, "universal_mlp_ratio": 1.0}
//
// `layers` are 0-based block indices, as in the state-dict keys (blocks.6 .. blocks.11 are the
// paper's "blocks 7 to 12 of 12"); "last": L is shorthand for the last L blocks. The other keys
// are the chosen layer type's options, declared once in that layer's options struct: type "soft"
// is Soft MoE (Puigcerver et al., SoftMoeOptions), "sphero" MoE Jetpack's SpheroMoE with the
// adaptive dual path (SpheroMoeOptions), "topk" V-MoE token-choice routing (TopKMoeOptions),
// "image" Mobile V-MoE's per-image routing (PerImageMoeOptions). A key of another type is an
// error, unless it holds that type's default: moejet before 0.1 wrote every type's keys.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "moejet/core/json_util.h"
#include "moejet/moe/per_image_moe.h"
#include "moejet/moe/soft_moe.h"
#include "moejet/moe/sphero_moe.h"
#include "moejet/moe/topk_moe.h"

namespace moejet::moe {

/// No MoE blocks (a dense model).
struct NoMoeOptions {
  static constexpr const char* kType = "none";
  template <class Self, class Visitor>
  static void for_each_field(Self&, Visitor&&) {}
  void validate() const {}
};

using MoeLayerOptions =
    std::variant<NoMoeOptions, SoftMoeOptions, SpheroMoeOptions, TopKMoeOptions, PerImageMoeOptions>;

struct MoeConfig {
  std::vector<int64_t> layers;  ///< 0-based block indices
  int64_t last = 0;             ///< alternative to `layers`: the last N blocks
  MoeLayerOptions options;      ///< the layer type and its options

  /// "none", "soft", "sphero", "topk" or "image".
  std::string type() const;
  bool enabled() const {
    return !std::holds_alternative<NoMoeOptions>(options);
  }
  /// Switches to layer type O with its default options and returns them for editing.
  template <class O>
  O& set() {
    return options.emplace<O>();
  }
  /// The options of type O; throws ConfigError naming the type in use if it is another.
  template <class O>
  const O& get() const {
    if (const O* o = std::get_if<O>(&options)) {
      return *o;
    }
    throw ConfigError(fmt::format("model.moe: expected type \"{}\", the model has \"{}\"", O::kType, type()));
  }
  /// The resolved block indices for a model of `depth` blocks.
  std::vector<int64_t> block_indices(int64_t depth) const;
  void validate(int64_t depth) const;
};

/// The default options of the layer type named `type` (ConfigError for an unknown name).
MoeLayerOptions moe_layer_options(const std::string& type);

void to_json(json& j, const MoeConfig& c);
MoeConfig moe_config_from_json(const json& j, const std::string& path);

}  // namespace moejet::moe
