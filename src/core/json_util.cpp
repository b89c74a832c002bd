#include "moejet/core/json_util.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "moejet/core/fs.h"

namespace moejet {

void check_known_keys(
    const json& j, std::initializer_list<const char*> known, const std::string& path) {
  if (!j.is_object()) {
    throw ConfigError(fmt::format(
        "config '{}': expected an object, got {}", path.empty() ? "<root>" : path, j.type_name()));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = std::any_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; });
    if (!ok) {
      std::string names;
      for (const char* k : known) {
        names += names.empty() ? k : std::string(", ") + k;
      }
      throw ConfigError(fmt::format(
          "config: unknown key '{}{}' (known keys: {})", path.empty() ? "" : path + ".", it.key(),
          names));
    }
  }
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw ConfigError(fmt::format("{}: cannot open JSON file", path));
  }
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: invalid JSON: {}", path, e.what()));
  }
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
}

void write_json_file(const std::string& path, const json& j) {
  write_atomic(path, [&](std::ostream& out) { out << j.dump(2) << "\n"; });
}

}  // namespace moejet
