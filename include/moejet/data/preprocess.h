#pragma once
// How an image becomes a model input at evaluation, in timm's pretrained_cfg terms (input_size,
// mean, std, crop_pct, interpolation), with the class names the outputs stand for. Training
// stores this with every checkpoint, so that `moejet eval` and later commands preprocess as the
// model was trained and check that the data's classes are the model's; a timm file, which
// carries none, gets timm's defaults for its architecture family.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moejet/core/json_util.h"
#include "moejet/data/augment.h"

namespace moejet::data {

struct Preprocess {
  std::vector<int64_t> input_size;  ///< [C, H, W]
  std::vector<double> mean, std;    ///< per channel
  double crop_pct = 1.0;
  std::string interpolation = "bilinear";
  std::vector<std::string> label_names;  ///< empty when unknown
};

/// The eval side of a training pipeline (resize to image_size / crop_pct, centre crop, normalise).
Preprocess preprocess_of(const AugmentConfig& augment, int64_t channels, int64_t image_size,
                         std::vector<std::string> label_names);
/// An AugmentConfig whose eval transform is this preprocessing.
AugmentConfig eval_augment(const Preprocess& p);

/// timm's pretrained_cfg keys: input_size, mean, std, crop_pct, interpolation, num_classes,
/// label_names.
json to_pretrained_cfg(const Preprocess& p);
/// Strict: a missing or malformed field is a CheckpointError naming `source`.
Preprocess preprocess_from_pretrained_cfg(const json& j, const std::string& source);

/// timm's default pretrained_cfg of a model family, by preset name: vit_* (mean = std = 0.5,
/// crop_pct 0.9, bicubic) and convnext_* (ImageNet mean and std, crop_pct 0.875, bicubic);
/// nullopt for other names.
std::optional<Preprocess> timm_default_preprocess(const std::string& preset, int64_t channels, int64_t image_size);

/// One line for logs: "input 1x28x28, mean [0.5], std [0.5], crop_pct 1, bilinear".
std::string describe(const Preprocess& p);

}  // namespace moejet::data
