#include "moejet/moe/layer_options.h"

#include <algorithm>
#include <cmath>

namespace moejet::moe {

int64_t expert_hidden(int64_t dim, double ratio) {
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(dim) * ratio));
}

std::string resolve_expert_init(const std::string& init, const char* layer_default) {
  return init == "auto" ? layer_default : init;
}

double moe_drop_path_rate(double rate, const std::string& mode, int64_t block, int64_t depth, int64_t position,
                          int64_t count) {
  if (mode == "image") {
    return depth > 1 ? rate * static_cast<double>(block) / static_cast<double>(depth - 1) : 0.0;
  }
  return count > 1 ? rate * static_cast<double>(position) / static_cast<double>(count - 1) : rate;
}

void check_choice(const std::string& value, const std::vector<std::string>& allowed, const char* key) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) {
    return;
  }
  std::string names;
  for (size_t i = 0; i < allowed.size(); ++i) {
    names += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + allowed[i];
  }
  throw ConfigError(fmt::format("model.moe.{}: expected {}, got \"{}\"", key, names, value));
}

void check_size(double value, double max, const char* key) {
  check<ConfigError>(value > 0 && value <= max, "model.moe.{}: must be in (0, {}], got {}", key, max, value);
}

void check_rate(double value, const char* key) {
  check<ConfigError>(value >= 0 && value < 1, "model.moe.{}: must be in [0, 1), got {}", key, value);
}

void check_experts(const std::string& expert_init, double expert_drop) {
  check_choice(expert_init, {"auto", "kaiming_uniform", "trunc_normal"}, "expert_init");
  check_rate(expert_drop, "expert_drop");
}

void check_non_negative(double value, const char* key) {
  check<ConfigError>(value >= 0 && std::isfinite(value), "model.moe.{}: must be finite and >= 0, got {}", key, value);
}

void check_router(int64_t num_experts, int64_t top_k, double router_noise, double aux_loss_weight) {
  check_size(static_cast<double>(num_experts), 65536, "num_experts");
  check<ConfigError>(top_k >= 1 && top_k <= num_experts, "model.moe.top_k: must be in [1, num_experts={}], got {}",
                     num_experts, top_k);
  check_non_negative(router_noise, "router_noise");
  check_non_negative(aux_loss_weight, "aux_loss_weight");
}

}  // namespace moejet::moe
