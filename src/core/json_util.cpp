#include "moejet/core/json_util.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "moejet/core/fs.h"

namespace moejet {

void check_known_keys(const json& j, const std::vector<std::string>& known, const std::string& path) {
  if (!j.is_object()) {
    throw ConfigError(
        fmt::format("config '{}': expected an object, got {}", path.empty() ? "<root>" : path, j.type_name()));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = std::any_of(known.begin(), known.end(), [&](const std::string& k) { return it.key() == k; });
    if (!ok) {
      std::string names;
      for (const auto& k : known) {
        names += names.empty() ? k : ", " + k;
      }
      throw ConfigError(
          fmt::format("config: unknown key '{}{}' (known keys: {})", path.empty() ? "" : path + ".", it.key(), names));
    }
  }
}

namespace {

// Configs nest a few levels: anything deeper than this is not a config, and would only cost stack.
constexpr int kMaxJsonDepth = 256;

// nlohmann's parser, refusing duplicate keys (nlohmann keeps the last silently) and nesting deeper
// than kMaxJsonDepth.
json parse_strict(std::istream* in, const std::string* text, const std::string& source) {
  std::vector<std::set<std::string>> keys;
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) {
      throw ConfigError(fmt::format("{}: JSON nested deeper than {} levels", source, kMaxJsonDepth));
    }
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end && !keys.empty()) {
      keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty()) {
      const auto k = parsed.get<std::string>();
      if (!keys.back().insert(k).second) {
        throw ConfigError(fmt::format("{}: key '{}' appears twice in one object", source, k));
      }
    }
    return true;
  };
  try {
    return in != nullptr ? json::parse(*in, cb) : json::parse(*text, cb);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
}

}  // namespace

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw ConfigError(fmt::format("{}: cannot open JSON file", path));
  }
  return parse_strict(&in, nullptr, path);
}

json parse_json(const std::string& text, const std::string& source) {
  return parse_strict(nullptr, &text, source);
}

void write_json_file(const std::string& path, const json& j) {
  write_atomic(path, [&](std::ostream& out) { out << j.dump(2) << "\n"; });
}

}  // namespace moejet
