#include "moejet/io/state_dict.h"

#include <algorithm>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::io {

std::string shape_string(const torch::Tensor& t) {
  return "[" + fmt::format("{}", fmt::join(t.sizes(), ", ")) + "]";
}

namespace {

// PyTorch's state_dict() order: a module's own parameters, then its own buffers, then each child
// in registration order. named_parameters() would list every parameter before any buffer, and
// files written in that order would not diff cleanly against timm's.
std::vector<std::pair<std::string, torch::Tensor>> module_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto add_own = [&out](const torch::nn::Module& m, const std::string& prefix) {
    for (const auto& p : m.named_parameters(/*recurse=*/false)) {
      out.emplace_back(prefix + p.key(), p.value());
    }
    for (const auto& b : m.named_buffers(/*recurse=*/false)) {
      out.emplace_back(prefix + b.key(), b.value());
    }
  };
  add_own(module, "");
  // include_self=false: the root need not be owned by a shared_ptr.
  for (const auto& child : module.named_modules("", /*include_self=*/false)) {
    add_own(*child.value(), child.key() + ".");
  }
  return out;
}

bool has_prefix(const std::string& key, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return key.rfind(p, 0) == 0; });
}

std::string name_list(const std::vector<std::string>& names, size_t limit = 8) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) {
    s += (i ? ", " : "") + names[i];
  }
  if (names.size() > limit) {
    s += fmt::format(", ... ({} more)", names.size() - limit);
  }
  return s;
}

}  // namespace

StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict state;
  for (auto& [name, tensor] : module_tensors(module)) {
    state.insert(name, tensor.detach());
  }
  return state;
}

std::string LoadReport::summary() const {
  std::string s = fmt::format("loaded {}", loaded.size());
  auto part = [&s](const char* what, const std::vector<std::string>& items) {
    if (!items.empty()) {
      s += fmt::format(", {} {} ({})", items.size(), what, name_list(items));
    }
  };
  part("missing", missing);
  part("unexpected", unexpected);
  part("shape mismatch", shape_mismatch);
  part("dropped", dropped);
  return s;
}

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state, const LoadOptions& options,
                           const std::string& source) {
  LoadReport report;
  auto targets = module_tensors(module);
  std::unordered_set<std::string> model_keys;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (model tensor, checkpoint)

  for (auto& [key, target] : targets) {
    model_keys.insert(key);
    const torch::Tensor* value = state.find(key);
    if (!value) {
      report.missing.push_back(key);
      continue;
    }
    if (has_prefix(key, options.drop_always)) {
      report.dropped.push_back(key);
      continue;
    }
    if (value->sizes() != target.sizes()) {
      if (has_prefix(key, options.drop_on_mismatch)) {
        report.dropped.push_back(key);
      } else {
        report.shape_mismatch.push_back(
            fmt::format("{}: expected {}, got {}", key, shape_string(target), shape_string(*value)));
      }
      continue;
    }
    // copy_ would turn the integers of F32 bytes labelled I32 into huge float weights, silently.
    if (target.is_floating_point() && !value->is_floating_point()) {
      report.dtype_mismatch.push_back(
          fmt::format("{}: the model holds {} but the checkpoint {} (integer data "
                      "cannot be float weights; is the file's dtype label right?)",
                      key, c10::toString(target.scalar_type()), c10::toString(value->scalar_type())));
      continue;
    }
    report.loaded.push_back(key);
    copies.emplace_back(target, *value);
  }
  for (const auto& item : state) {
    if (!model_keys.count(item.key())) {
      report.unexpected.push_back(item.key());
    }
  }

  // Everything is checked before anything is copied: a failed load leaves the model untouched.
  std::vector<std::string> problems;
  for (const auto& m : report.shape_mismatch) {
    problems.push_back("shape mismatch: " + m);
  }
  for (const auto& m : report.dtype_mismatch) {
    problems.push_back("dtype mismatch: " + m);
  }
  if (!options.allow_missing) {
    for (const auto& k : report.missing) {
      problems.push_back("missing in checkpoint: " + k);
    }
  }
  if (!options.allow_unexpected) {
    for (const auto& k : report.unexpected) {
      problems.push_back("unexpected (not in model): " + k);
    }
  }
  if (!problems.empty()) {
    std::string msg = fmt::format("{}: cannot load into the model ({} problem{}):", source, problems.size(),
                                  problems.size() == 1 ? "" : "s");
    for (const auto& p : problems) {
      msg += "\n  " + p;
    }
    throw CheckpointError(msg);
  }

  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < copies.size(); ++k) {
    auto& [target, value] = copies[k];
    // copy_ converts dtype and device to the model tensor's.
    target.copy_(value);
    if (target.is_floating_point() && !torch::isfinite(target).all().item<bool>()) {
      report.non_finite.push_back(report.loaded[k]);
    }
  }
  if (!report.non_finite.empty()) {
    // A warning, not an error: inspecting a diverged run's weights is legitimate.
    spdlog::warn("{}: {} tensor{} hold NaN or Inf values ({}); expect NaN outputs and losses", source,
                 report.non_finite.size(), report.non_finite.size() == 1 ? "" : "s", name_list(report.non_finite));
  }
  return report;
}

}  // namespace moejet::io
