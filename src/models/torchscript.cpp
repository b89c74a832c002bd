#include "moejet/models/torchscript.h"

#include <cctype>
#include <functional>
#include <sstream>

#include <fmt/ranges.h>

#include <torch/csrc/jit/frontend/tracer.h>

#include "moejet/core/error.h"
#include "moejet/core/strings.h"

namespace moejet::models {

namespace {

// "moejet::models::VisionTransformerImpl" -> "VisionTransformer": the class name a Python user sees.
std::string class_name(const torch::nn::Module& m) {
  std::string n = m.name();
  const auto colon = n.rfind("::");
  if (colon != std::string::npos) {
    n = n.substr(colon + 2);
  }
  if (n.size() > 4 && ends_with(n, "Impl")) {
    n.resize(n.size() - 4);
  }
  std::string out;
  for (char c : n) {
    out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  }
  return out.empty() ? "Module" : out;
}

// A jit module holding the very tensors of `m` (so that the tracer maps each use of a parameter to
// an attribute of `self`) under the same names, submodule by submodule.
torch::jit::Module mirror(const torch::nn::Module& m, const std::shared_ptr<torch::jit::CompilationUnit>& cu) {
  torch::jit::Module jm(c10::QualifiedName("__torch__.moejet." + class_name(m)), cu, /*shouldMangle=*/true);
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    jm.register_parameter(p.key(), p.value(), /*is_buffer=*/false);
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) {
    jm.register_buffer(b.key(), b.value());
  }
  for (const auto& c : m.named_children()) {
    jm.register_module(c.key(), mirror(*c.value(), cu));
  }
  return jm;
}

void add_traced_method(torch::jit::Module& jm, const std::string& name, const torch::Tensor& example,
                       const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  auto traced = torch::jit::tracer::trace(
      {example}, [&](torch::jit::Stack in) -> torch::jit::Stack { return {fn(in.at(0).toTensor())}; },
      [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/true, /*force_outplace=*/false, &jm);
  auto graph = traced.first->graph;
  auto* f = jm._ivalue()->compilation_unit()->create_function(c10::QualifiedName(*jm.type()->name(), name), graph);
  jm.type()->addMethod(f);
}

}  // namespace

torch::jit::Module trace_model(const ModelPtr& model, const torch::Tensor& example) {
  check<ConfigError>(example.dim() == 4 && example.size(1) == model->in_chans(),
                     "torchscript: expected example images [B, {}, H, W], got {}", model->in_chans(),
                     fmt::format("{}", fmt::join(example.sizes(), "x")));
  const bool was_training = model->is_training();
  model->eval();
  std::vector<bool> stats;
  for (auto& entry : model->moe_layer_list) {
    stats.push_back(entry.second->collect_stats);
    entry.second->collect_stats = false;
  }
  auto restore = [&] {
    size_t i = 0;
    for (auto& entry : model->moe_layer_list) {
      entry.second->collect_stats = stats[i++];
    }
    model->train(was_training);
  };
  try {
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    auto jm = mirror(*model, cu);
    torch::NoGradGuard no_grad;
    add_traced_method(jm, "forward", example, [&](const torch::Tensor& x) { return model->forward(x); });
    if (model->router) {
      add_traced_method(jm, "route", example, [&](const torch::Tensor& x) {
        model->forward(x);
        return model->last_routing.logits;
      });
    }
    restore();
    return jm;
  } catch (...) {
    restore();
    throw;
  }
}

std::string serialize_torchscript(const torch::jit::Module& module,
                                  const std::map<std::string, std::string>& extra_files) {
  const torch::jit::ExtraFilesMap extra(extra_files.begin(), extra_files.end());
  std::ostringstream os;
  module.save(os, extra);
  return os.str();
}

}  // namespace moejet::models
