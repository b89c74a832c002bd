// Model files: load_model rebuilds a saved model from the file alone, names the file when it
// cannot, and refuses a format version it does not read.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/io/checkpoint_file.h"
#include "moejet/models/model_file.h"
#include "moejet/models/vit.h"
#include "test_util.h"

using namespace moejet;
using moejet::testing::throws_error;

TEST(ModelFile, ASavedModelLoadsFromTheFileAloneAndOtherFormatVersionsAreRefused) {
  moejet::testing::TempDir tmp;
  auto cfg = moejet::testing::tiny_vit();
  cfg.moe = moejet::testing::moe_config({{"type", "soft"}, {"last", 1}, {"num_experts", 2}});
  models::ModelConfig mc = cfg;
  torch::manual_seed(0);
  auto model = models::make_model(mc);
  const std::string path = tmp.file("m.safetensors");
  models::save_model(path, *model, json(mc), {{"note", "kept"}});

  auto loaded = models::load_model(path);
  EXPECT_EQ(json(loaded.config), json(mc));
  EXPECT_EQ(loaded.metadata.at("note"), "kept");
  EXPECT_EQ(loaded.metadata.at(models::kFormatVersionKey), models::kFormatVersion);
  auto x = torch::randn({2, 1, 8, 8});
  model->eval();
  loaded.model->eval();
  EXPECT_TRUE(torch::equal(model->forward(x), loaded.model->forward(x)));
  // `edit` changes the config before the model is built.
  auto edited = models::load_model(path, nullptr, [](json& j) { j["drop_rate"] = 0.25; });
  EXPECT_EQ(edited.config.as<models::VitConfig>().drop_rate, 0.25);

  // A newer format is refused, naming the file and both versions.
  io::Metadata meta;
  auto state = io::read_checkpoint(path, &meta);
  meta[models::kFormatVersionKey] = "2";
  io::write_safetensors(tmp.file("v2.safetensors"), state, meta);
  EXPECT_TRUE(throws_error<CheckpointError>([&] { models::load_model(tmp.file("v2.safetensors")); },
                                            {"v2.safetensors", "format version \"2\"", "reads version 1"}));
  // No config in the file (a timm checkpoint): the error names the file and the flag; a config
  // given by the caller loads it.
  io::write_safetensors(tmp.file("bare.safetensors"), state, {});
  EXPECT_TRUE(throws_error<ConfigError>([&] { models::load_model(tmp.file("bare.safetensors")); },
                                        {"bare.safetensors", "no moejet model config", "--model"}));
  auto bare = models::load_model(tmp.file("bare.safetensors"), json(mc));
  bare.model->eval();
  EXPECT_TRUE(torch::equal(model->forward(x), bare.model->forward(x)));
}
