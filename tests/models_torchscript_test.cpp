#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <sstream>

#include "moejet/core/json_util.h"
#include "moejet/models/model_config.h"
#include "moejet/models/torchscript.h"
#include "test_util.h"

namespace {

using namespace moejet;
using moejet::testing::all_close;

// The example configs' models (smaller where they are big): dense ViT, each MoE layer type, the
// Mobile V-MoE router with its experts, ConvNeXt dense and with SpheroMoE.
models::ModelPtr model_of(const std::string& config, const json& overrides = json::object()) {
  json j = read_json_file(std::string(MOEJET_SOURCE_DIR) + "/configs/" + config)["model"];
  j.merge_patch(overrides);
  return models::make_model(models::model_config_from_json(j));
}

// Traced at batch 2 on one input, reloaded from the archive bytes (no moejet module involved),
// compared with moejet's own forward on other inputs: a frozen branch would show there.
void expect_export_matches(const models::ModelPtr& model, const std::string& what) {
  torch::manual_seed(0);
  model->eval();
  const int64_t s = model->image_size(), c = model->in_chans();
  auto module = models::trace_model(model, torch::randn({2, c, s, s}));
  std::istringstream in(models::serialize_torchscript(module, {{"moejet.json", "{}"}}));
  auto back = torch::jit::load(in);
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(model->is_training()) << what;
  for (int rep = 0; rep < 3; ++rep) {
    const auto x = torch::randn({2, c, s, s}) * (1 + rep);
    const auto ours = model->forward(x);
    EXPECT_TRUE(all_close(back.forward({x}).toTensor(), ours, 1e-4, 1e-5)) << what << ", input " << rep;
    if (model->router) {
      const auto route = back.get_method("route")({x}).toTensor();
      EXPECT_TRUE(all_close(route, model->last_routing.logits, 1e-4, 1e-5)) << what;
    }
  }
  // The archive's tensors are the model's, under the model's names.
  std::vector<std::string> theirs, ours;
  for (const auto& p : back.named_parameters()) {
    theirs.push_back(p.name);
  }
  for (const auto& p : model->named_parameters()) {
    ours.push_back(p.key());
  }
  std::sort(theirs.begin(), theirs.end());
  std::sort(ours.begin(), ours.end());
  EXPECT_EQ(theirs, ours) << what;
}

TEST(TorchScript, EveryModelTypeReloadsWithMoejetsLogits) {
  const json small = {{"depth", 2}, {"embed_dim", 32}, {"num_heads", 2}};
  expect_export_matches(model_of("vit_fmnist.json", small), "dense ViT");
  expect_export_matches(model_of("vit_fmnist_sphero.json", {{"depth", 2}, {"moe", {{"layers", {1}}}}}), "SpheroMoE");
  expect_export_matches(model_of("vit_fmnist_softmoe.json", {{"depth", 2}, {"moe", {{"layers", {1}}}}}), "Soft MoE");
  expect_export_matches(model_of("vit_fmnist_topk.json", {{"depth", 2}, {"moe", {{"layers", {1}}}}}), "top-k MoE");
  expect_export_matches(model_of("vit_fmnist_mobile_vmoe.json", {{"depth", 3}}), "Mobile V-MoE");
  expect_export_matches(model_of("vit_fmnist_mobile_vmoe.json", {{"depth", 3}, {"moe", {{"top_k", 2}}}}),
                        "Mobile V-MoE, top-2");
  expect_export_matches(model_of("convnext_fmnist_sphero.json", {{"img_size", 32}}), "ConvNeXt SpheroMoE");
}

TEST(TorchScript, TracingRestoresTheModelsModeAndRefusesAnotherChannelCount) {
  auto model = model_of("vit_fmnist.json", {{"depth", 1}, {"embed_dim", 16}, {"num_heads", 2}});
  model->train();
  models::trace_model(model, torch::randn({1, 1, 28, 28}));
  EXPECT_TRUE(model->is_training());
  EXPECT_THROW(models::trace_model(model, torch::randn({1, 3, 28, 28})), ConfigError);
}

}  // namespace
