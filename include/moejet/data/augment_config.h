#pragma once
// The "augment" section of a training config: timm's train-time augmentation and eval-time
// geometry in one struct (its fields declared once, core/config_fields.h). The transforms that
// read it are in augment.h.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/config_fields.h"

namespace moejet::data {

struct AugmentConfig {
  int64_t image_size = 0;  ///< output side; 0 = keep the data set's size
  // Train-time geometry.
  bool random_resized_crop = false;  ///< timm's RandomResizedCrop; otherwise resize only
  double rrc_scale_min = 0.08, rrc_scale_max = 1.0;
  double rrc_ratio_min = 3.0 / 4.0, rrc_ratio_max = 4.0 / 3.0;
  int64_t random_crop_padding = 0;  ///< pad-and-crop (CIFAR/MNIST style), when > 0
  double hflip = 0.0;               ///< probability of a horizontal flip
  std::string randaugment;          ///< timm-style "rand-m9-n2-mstd0.5"; "" = off
  /// Resampling of RandAugment's rotate/shear/translate: "" = `interpolation`, as timm (and the
  /// authors' mmpretrain hparams: bicubic) do; "bilinear" is moejet's earlier fixed choice.
  std::string randaugment_interpolation;
  double random_erasing = 0.0;  ///< probability (timm's reprob)
  /// The erased box's per-pixel noise: "normal" N(0, 1) after normalisation (timm's mode 'pixel'),
  /// or "pixel8": N(mean, std) on the 8-bit image, clipped to [0, 255] and truncated, as
  /// mmpretrain's RandomErasing(mode='rand') before normalisation (the authors' recipe).
  std::string random_erasing_noise = "normal";
  // Eval-time geometry: resize shorter side to image_size / crop_pct, then centre crop.
  double crop_pct = 1.0;
  std::string interpolation = "bilinear";  ///< "bilinear" or "bicubic" or "nearest"
  // Normalisation (per channel; a single value is broadcast). Empty = data-set defaults (0.5/0.5).
  std::vector<double> mean, std;
  // Batch mixing (timm's Mixup): applied by the trainer on whole batches.
  double mixup_alpha = 0.0;
  double cutmix_alpha = 0.0;
  double mix_prob = 1.0;         ///< probability a batch is mixed at all
  double mix_switch_prob = 0.5;  ///< probability of cutmix instead of mixup when both on
  /// Each image's mixing partner: "flip" (the reversed batch, timm) or "permute" (a random
  /// permutation of the batch, mmpretrain's, the authors').
  std::string mix_partner = "flip";
  MOEJET_CONFIG_FIELDS(image_size, random_resized_crop, rrc_scale_min, rrc_scale_max, rrc_ratio_min, rrc_ratio_max,
                       random_crop_padding, hflip, randaugment, randaugment_interpolation, random_erasing,
                       random_erasing_noise, crop_pct, interpolation, mean, std, mixup_alpha, cutmix_alpha, mix_prob,
                       mix_switch_prob, mix_partner)

  /// Throws ConfigError naming `path`.key for a value out of range.
  void validate(const std::string& path) const;
};

void to_json(json& j, const AugmentConfig& c);
/// Strict: unknown keys throw ConfigError naming `path`.
void from_json_checked(const json& j, AugmentConfig& c, const std::string& path);

}  // namespace moejet::data
