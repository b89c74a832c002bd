#pragma once
// Strict JSON <-> config-struct helpers. Configs reject unknown keys (a typo such as "lerning_rate"
// must not silently fall back to a default) and report the dotted path of the offending key.

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "moejet/core/error.h"

namespace moejet {

using json = nlohmann::json;

/// Throws ConfigError naming `path.key` for any key of `j` not in `known`.
void check_known_keys(const json& j, const std::vector<std::string>& known, const std::string& path);

/// Reads `j[key]` into `out` when present; wraps type errors into ConfigError naming `path.key`.
template <class T>
void read_key(const json& j, const char* key, T& out, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return;
  }
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // nlohmann would truncate 1.5 to 1, and wrap 2^64 around: a whole number in range, or an error.
    if (it->is_number_float()) {
      const double v = it->template get<double>();
      if (v != std::floor(v) || !(v >= static_cast<double>(std::numeric_limits<T>::min()) &&
                                  v <= static_cast<double>(std::numeric_limits<T>::max()))) {
        throw ConfigError(fmt::format("config '{}{}': expected a whole number, got {}", path.empty() ? "" : path + ".",
                                      key, it->dump()));
      }
    }
  }
  try {
    out = it->get<T>();
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("config '{}{}': expected {}, got {} ({})", path.empty() ? "" : path + ".", key,
                                  json(T{}).type_name(), it->type_name(), it->dump()));
  }
}

/// Parses a JSON file; errors name the file and the parser's position.
json read_json_file(const std::string& path);

/// Parses JSON text from `source` (e.g. a checkpoint's metadata entry); errors name the source.
json parse_json(const std::string& text, const std::string& source);

/// Writes `j` (pretty-printed) atomically.
void write_json_file(const std::string& path, const json& j);

}  // namespace moejet
