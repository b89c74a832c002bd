// The model registry: every backbone is found by its name and its presets, and a config reads,
// builds and reports its architecture without any code testing names.

#include <gtest/gtest.h>

#include "moejet/data/preprocess.h"
#include "moejet/models/architectures.h"
#include "moejet/models/convnext.h"
#include "moejet/models/vit.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::models;
using moejet::testing::throws_error;

TEST(Architectures, EveryPresetBelongsToOneArchitectureAndConfigsFindItWithoutArch) {
  ASSERT_EQ(architectures().front().name, "vit");  // a config without "arch" is a ViT, as ever
  for (const auto& arch : architectures()) {
    ASSERT_FALSE(arch.presets.empty()) << arch.name;
    for (const auto& preset : arch.presets) {
      const Architecture* found = architecture_of_preset(preset);
      ASSERT_NE(found, nullptr) << preset;
      EXPECT_EQ(found->name, arch.name) << preset;
      const auto cfg = model_config_from_json({{"preset", preset}});
      EXPECT_EQ(cfg.arch(), arch.name) << preset;
      EXPECT_EQ(&architecture_of(cfg), &arch) << preset;
    }
  }
  EXPECT_EQ(architecture_of_preset("resnet50"), nullptr);
}

TEST(Architectures, ConfigsBuildTheirOwnModelAndRoundTrip) {
  ModelConfig convnext = model_config_from_json({{"preset", "convnext_atto"}, {"num_classes", 7}});
  ASSERT_NE(convnext.get_if<ConvNextConfig>(), nullptr);
  EXPECT_EQ(convnext.get_if<VitConfig>(), nullptr);
  EXPECT_EQ(convnext.num_classes(), 7);
  auto model = make_model(convnext);
  EXPECT_NE(std::dynamic_pointer_cast<ConvNextImpl>(model), nullptr);
  EXPECT_EQ(model->arch(), "convnext");
  // Written with its "arch", read back the same.
  const json written = convnext;
  EXPECT_EQ(written.at("arch"), "convnext");
  EXPECT_EQ(json(model_config_from_json(written)), written);

  ModelConfig vit = moejet::testing::tiny_vit();
  EXPECT_EQ(vit.arch(), "vit");
  EXPECT_FALSE(json(vit).contains("arch"));  // ViT files never had one
  EXPECT_NE(std::dynamic_pointer_cast<VisionTransformerImpl>(make_model(vit)), nullptr);
  EXPECT_EQ(vit.as<VitConfig>().embed_dim, 16);
  EXPECT_TRUE(throws_error<ConfigError>([&] { convnext.as<VitConfig>(); }, {"the model is a ConvNeXt, not a ViT"}));
}

TEST(Architectures, UnknownNamesAndPresetsListWhatExists) {
  EXPECT_TRUE(throws_error<ConfigError>(
      [] {
        model_config_from_json({{"arch", "resnet"}});
      },
      {"model.arch", "\"vit\" or \"convnext\"", "resnet"}));
  // An unknown preset lists every architecture's presets, whatever its prefix.
  EXPECT_TRUE(throws_error<ConfigError>(
      [] {
        model_config_from_json({{"preset", "convnext_huge"}});
      },
      {"model.preset", "convnext_huge", "ViT: ", "vit_tiny_patch16_224", "ConvNeXt: ", "convnext_atto"}));
}

TEST(Architectures, TimmDefaultPreprocessingComesFromThePresetsArchitecture) {
  auto vit = data::timm_default_preprocess("vit_tiny_patch16_224", 1, 28);
  ASSERT_TRUE(vit.has_value());
  EXPECT_EQ(vit->mean, std::vector<double>({0.5}));  // one value stands for every channel
  EXPECT_DOUBLE_EQ(vit->crop_pct, 0.9);
  auto convnext = data::timm_default_preprocess("convnext_atto", 3, 224);
  ASSERT_TRUE(convnext.has_value());
  EXPECT_EQ(convnext->mean, std::vector<double>({0.485, 0.456, 0.406}));
  EXPECT_DOUBLE_EQ(convnext->crop_pct, 0.875);
  EXPECT_FALSE(data::timm_default_preprocess("convnext_atto", 1, 28).has_value());  // RGB statistics only
  EXPECT_FALSE(data::timm_default_preprocess("my_own_model", 3, 32).has_value());
}
