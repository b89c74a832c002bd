#include "moejet/models/checkpoint_layout.h"

#include <algorithm>
#include <array>
#include <utility>

#include <fmt/format.h>

namespace moejet::models {

namespace {

// (authors' name, moejet's name) of one key segment under a block's "mlp.". Order matters only
// for the reverse direction, where "experts.fc1." must not catch "core.fc1.".
struct Rename {
  const char* jetpack;
  const char* moejet;
};
constexpr std::array<Rename, 12> kRenames{{
    {"scales.0", "dispatch_temperature"},
    {"scales.1", "combine_temperature"},
    {"core_experts.vit_fc1.", "core.fc1."},
    {"core_experts.vit_fc2.", "core.fc2."},
    {"univ_experts.vit_fc1.", "universal.fc1."},
    {"univ_experts.vit_fc2.", "universal.fc2."},
    {"experts.vit_fc1.", "experts.fc1."},
    {"experts.vit_fc2.", "experts.fc2."},
    {"phi_key_proj.gamma", "key_scale"},
    {"phi_key_proj.beta", "key_offset"},
    {"phi_query_proj.gamma", "phi_scale"},
    {"phi_query_proj.beta", "phi_offset"},
}};

constexpr const char* kMlp = ".mlp.";

// Where a key's MoE-layer part starts: after its ".mlp.", or at 0 in a single layer's state dict.
size_t layer_part(const std::string& key) {
  const auto at = key.find(kMlp);
  return at == std::string::npos ? 0 : at + std::char_traits<char>::length(kMlp);
}

// The key with `from` replaced by `to` when `from` starts the key's MoE-layer part and, for a
// name without a trailing dot, ends the key; the key unchanged otherwise.
std::string rename_after_mlp(const std::string& key, const std::string& from, const std::string& to) {
  const size_t start = layer_part(key);
  if (key.compare(start, from.size(), from) != 0) {
    return key;
  }
  if (from.back() != '.' && start + from.size() != key.size()) {
    return key;
  }
  return key.substr(0, start) + to + key.substr(start + from.size());
}

std::string to_moejet_key(const std::string& key) {
  for (const auto& r : kRenames) {
    auto k = rename_after_mlp(key, r.jetpack, r.moejet);
    if (k != key) {
      return k;
    }
  }
  return key;
}

}  // namespace

std::string detect_key_layout(const io::StateDict& state) {
  for (const auto& item : state) {
    if (to_moejet_key(item.key()) != item.key()) {
      return "jetpack";
    }
  }
  return "moejet";
}

io::StateDict to_moejet_layout(const io::StateDict& state, std::vector<std::string>* notes) {
  // mmpretrain's TimmClassifier holds the timm model as `model`: every key starts "model.".
  const std::string prefix = "model.";
  bool prefixed = !state.is_empty();
  for (const auto& item : state) {
    prefixed = prefixed && item.key().rfind(prefix, 0) == 0;
  }
  io::StateDict out;
  int64_t renamed = 0;
  std::vector<std::string> examples;
  for (const auto& item : state) {
    std::string key = prefixed ? item.key().substr(prefix.size()) : item.key();
    std::string mapped = to_moejet_key(key);
    if (mapped != key) {
      ++renamed;
      const size_t at = layer_part(key);
      std::string example = fmt::format("{} -> {}", key.substr(at), mapped.substr(at));
      if (examples.size() < 3 && std::find(examples.begin(), examples.end(), example) == examples.end()) {
        examples.push_back(example);
      }
    }
    out.insert(mapped, item.value());
  }
  if (notes) {
    if (prefixed) {
      notes->push_back(
          "mmengine checkpoint layout: the \"model.\" prefix of MMPretrain's TimmClassifier removed from every key");
    }
    if (renamed > 0) {
      notes->push_back(fmt::format("MoE Jetpack authors' key layout: {} keys renamed ({}, ...)", renamed,
                                   fmt::join(examples, ", ")));
    }
  }
  return out;
}

io::StateDict to_jetpack_layout(const io::StateDict& state) {
  io::StateDict out;
  for (const auto& item : state) {
    std::string key = item.key();
    for (const auto& r : kRenames) {
      auto k = rename_after_mlp(key, r.moejet, r.jetpack);
      if (k != key) {
        key = std::move(k);
        break;
      }
    }
    out.insert(key, item.value());
  }
  return out;
}

}  // namespace moejet::models
