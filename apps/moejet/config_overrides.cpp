#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/models/architectures.h"

namespace moejet::cli {

void apply_overrides(json& config, const std::vector<std::string>& overrides) {
  for (const auto& item : overrides) {
    auto eq = item.find('=');
    check<ConfigError>(eq != std::string::npos && eq > 0, "--set '{}': expected KEY=VALUE, e.g. optim.lr=0.001", item);
    std::string key = item.substr(0, eq), text = item.substr(eq + 1);
    json value;
    try {
      value = json::parse(text);
    } catch (const json::exception&) {
      value = text;  // bare strings need no quotes: --set data.dataset=fashion-mnist
    }
    json* node = &config;
    size_t start = 0;
    while (true) {
      auto dot = key.find('.', start);
      std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      check<ConfigError>(!part.empty(), "--set '{}': empty key component", item);
      if (dot == std::string::npos) {
        (*node)[part] = value;
        break;
      }
      if (!node->contains(part)) {
        (*node)[part] = json::object();
      }
      node = &(*node)[part];
      check<ConfigError>(node->is_object(), "--set '{}': '{}' is not a section", item, part);
      start = dot + 1;
    }
  }
}

std::string resolve_config_path(const std::string& path) {
  if (file_exists(path)) {
    return path;
  }
  // Examples say configs/...: from another folder, the repository's own copy.
  const std::string in_repo = std::string(MOEJET_REPO_DIR) + "/" + path;
  if (!path.empty() && path[0] != '/' && file_exists(in_repo)) {
    spdlog::info("{}: not here; using {}", path, in_repo);
    return in_repo;
  }
  throw ConfigError(fmt::format("{}: no such file", path));
}

bool names_a_file(const std::string& spec) {
  return file_exists(spec) || spec.find('/') != std::string::npos ||
         (spec.size() > 5 && spec.compare(spec.size() - 5, 5, ".json") == 0);
}

json load_model_json(const std::string& spec) {
  if (names_a_file(spec)) {
    json j = read_json_file(resolve_config_path(spec));
    if (j.contains("model")) {
      return j.at("model");
    }
    return j;
  }
  const models::Architecture* arch = models::architecture_of_preset(spec);
  check<ConfigError>(arch != nullptr, "'{}' is neither a file nor a model preset ({})", spec,
                     models::describe_presets());
  // As a config file would say it: "arch" only where it is not the default (ViT).
  return arch == &models::architectures().front() ? json{{"preset", spec}}
                                                  : json{{"arch", arch->name}, {"preset", spec}};
}

}  // namespace moejet::cli
