#include "moejet/moe/moe_config.h"

#include <algorithm>

namespace moejet::moe {

namespace {

template <size_t I = 0>
MoeLayerOptions options_named(const std::string& type) {
  if constexpr (I < std::variant_size_v<MoeLayerOptions>) {
    using O = std::variant_alternative_t<I, MoeLayerOptions>;
    if (type == O::kType) {
      return O{};
    }
    return options_named<I + 1>(type);
  } else {
    throw ConfigError(fmt::format("model.moe.type: expected none, soft, sphero, topk or image, got \"{}\"", type));
  }
}

// The layer type other than alternative `chosen` that has `key` among its options: with its
// default value (`*at_default`) if one does, else any.
template <size_t I = 0>
const char* type_owning_key(const std::string& key, const json& value, size_t chosen, bool* at_default) {
  if constexpr (I < std::variant_size_v<MoeLayerOptions>) {
    using O = std::variant_alternative_t<I, MoeLayerOptions>;
    const char* owner = nullptr;
    if (I != chosen) {
      const json defaults = config_to_json(O{});
      auto it = defaults.find(key);
      if (it != defaults.end()) {
        owner = O::kType;
        if (*it == value) {
          *at_default = true;
          return owner;
        }
      }
    }
    const char* later = type_owning_key<I + 1>(key, value, chosen, at_default);
    return *at_default || !owner ? later : owner;
  } else {
    return nullptr;
  }
}

constexpr const char* kCommonKeys[] = {"type", "layers", "last"};

}  // namespace

MoeLayerOptions moe_layer_options(const std::string& type) {
  return options_named(type);
}

std::string MoeConfig::type() const {
  return std::visit([](const auto& o) -> std::string { return o.kType; }, options);
}

std::vector<int64_t> MoeConfig::block_indices(int64_t depth) const {
  if (!enabled()) {
    return {};
  }
  if (!layers.empty()) {
    auto out = layers;
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<int64_t> out;
  for (int64_t i = std::max<int64_t>(depth - last, 0); i < depth; ++i) {
    out.push_back(i);
  }
  return out;
}

void MoeConfig::validate(int64_t depth) const {
  if (!enabled()) {
    return;
  }
  check<ConfigError>(layers.empty() || last == 0, "model.moe: give either 'layers' or 'last', not both");
  check<ConfigError>(!layers.empty() || last > 0, "model.moe: 'layers' or 'last' must name at least one block");
  for (size_t k = 0; k < layers.size(); ++k) {
    const int64_t i = layers[k];
    check<ConfigError>(i >= 0 && i < depth, "model.moe.layers: block {} out of range for depth {}", i, depth);
    check<ConfigError>(std::find(layers.begin(), layers.begin() + static_cast<std::ptrdiff_t>(k), i) ==
                           layers.begin() + static_cast<std::ptrdiff_t>(k),
                       "model.moe.layers: block {} is listed twice", i);
  }
  check<ConfigError>(last <= depth, "model.moe.last: {} exceeds depth {}", last, depth);
  std::visit([](const auto& o) { o.validate(); }, options);
}

void to_json(json& j, const MoeConfig& c) {
  j = std::visit([](const auto& o) { return config_to_json(o); }, c.options);
  j["type"] = c.type();
  j["layers"] = c.layers;
  j["last"] = c.last;
}

MoeConfig moe_config_from_json(const json& j, const std::string& path) {
  check<ConfigError>(j.is_object(), "config '{}': expected an object, got {}", path, j.type_name());
  MoeConfig c;
  std::string type = NoMoeOptions::kType;
  read_key(j, "type", type, path);
  c.options = options_named(type);
  read_key(j, "layers", c.layers, path);
  read_key(j, "last", c.last, path);
  std::visit(
      [&](auto& o) {
        using O = std::decay_t<decltype(o)>;
        std::vector<std::string> known(std::begin(kCommonKeys), std::end(kCommonKeys));
        const auto own_keys = config_keys<O>();
        known.insert(known.end(), own_keys.begin(), own_keys.end());
        json own = json::object();
        for (auto it = j.begin(); it != j.end(); ++it) {
          if (std::find(own_keys.begin(), own_keys.end(), it.key()) != own_keys.end()) {
            own[it.key()] = it.value();
            continue;
          }
          if (std::find(known.begin(), known.end(), it.key()) != known.end()) {
            continue;
          }
          bool at_default = false;
          const char* owner = type_owning_key(it.key(), it.value(), c.options.index(), &at_default);
          if (at_default) {
            continue;
          }
          check<ConfigError>(owner == nullptr, "config '{}.{}': an option of MoE type {}, not of type {}", path,
                             it.key(), owner ? owner : "", type);
          check_known_keys(json{{it.key(), it.value()}}, known, path);
        }
        read_config(own, o, path);
        o.validate();
      },
      c.options);
  return c;
}

}  // namespace moejet::moe
