#include <fstream>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit_config.h"

namespace moejet::cli {

void apply_overrides(json& config, const std::vector<std::string>& overrides) {
  for (const auto& item : overrides) {
    auto eq = item.find('=');
    check<ConfigError>(eq != std::string::npos && eq > 0,
                       "--set '{}': expected KEY=VALUE, e.g. optim.lr=0.001", item);
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

json load_model_json(const std::string& spec) {
  if (!file_exists(spec)) {
    if (spec.rfind("convnext_", 0) == 0) {
      models::convnext_preset(spec);  // throws ConfigError listing known presets
      return json{{"arch", "convnext"}, {"preset", spec}};
    }
    models::vit_preset(spec);  // throws ConfigError listing known presets
    return json{{"preset", spec}};
  }
  json j = read_json_file(spec);
  if (j.contains("model")) {
    return j.at("model");
  }
  return j;
}

}  // namespace moejet::cli
