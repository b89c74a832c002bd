#pragma once
// Per-sample image transforms and batch-level mixing, configured by AugmentConfig (which
// round-trips to JSON under the "augment" key of a training config). Transforms are deterministic
// given a seed: the loader seeds each sample's generator from (seed, epoch, index), so a resumed run
// sees exactly the augmentations an uninterrupted one would, whatever the thread scheduling.

#include <array>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/core/json_util.h"

namespace moejet::data {

using Rng = std::mt19937_64;

struct AugmentConfig {
  int64_t image_size = 0;                ///< output side; 0 = keep the data set's size
  // Train-time geometry.
  bool random_resized_crop = false;      ///< timm's RandomResizedCrop; otherwise resize only
  double rrc_scale_min = 0.08, rrc_scale_max = 1.0;
  double rrc_ratio_min = 3.0 / 4.0, rrc_ratio_max = 4.0 / 3.0;
  int64_t random_crop_padding = 0;       ///< pad-and-crop (CIFAR/MNIST style), when > 0
  double hflip = 0.0;                    ///< probability of a horizontal flip
  std::string randaugment;               ///< timm-style "rand-m9-n2-mstd0.5"; "" = off
  /// Resampling of RandAugment's rotate/shear/translate: "" = `interpolation`, as timm (and the
  /// authors' mmpretrain hparams: bicubic) do; "bilinear" is moejet's earlier fixed choice.
  std::string randaugment_interpolation;
  double random_erasing = 0.0;           ///< probability (timm's reprob)
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
  double mix_prob = 1.0;                 ///< probability a batch is mixed at all
  double mix_switch_prob = 0.5;          ///< probability of cutmix instead of mixup when both on
  /// Each image's mixing partner: "flip" (the reversed batch, timm) or "permute" (a random
  /// permutation of the batch, mmpretrain's, the authors').
  std::string mix_partner = "flip";
};

void to_json(json& j, const AugmentConfig& c);
/// Strict: unknown keys throw ConfigError naming `path`.
void from_json_checked(const json& j, AugmentConfig& c, const std::string& path);

/// uint8 [C, H, W] -> float [C, H, W] (normalised); must be thread-safe and reentrant.
using Transform = std::function<torch::Tensor(const torch::Tensor& image, Rng& rng)>;

/// Training pipeline: geometry (RRC or resize, pad-crop), flip, RandAugment, to float, normalise,
/// random erasing — the order timm's create_transform uses.
Transform make_train_transform(const AugmentConfig& config, int64_t channels);
/// Eval pipeline: resize + centre crop, to float, normalise.
Transform make_eval_transform(const AugmentConfig& config, int64_t channels);

// Single transforms, exposed for tests and custom pipelines. All take/return [C, H, W].
torch::Tensor resize(const torch::Tensor& img, int64_t h, int64_t w, const std::string& interpolation);
torch::Tensor center_crop(const torch::Tensor& img, int64_t h, int64_t w);
torch::Tensor random_resized_crop(const torch::Tensor& img, int64_t size, double scale_min,
                                  double scale_max, double ratio_min, double ratio_max,
                                  const std::string& interpolation, Rng& rng);
torch::Tensor pad_random_crop(const torch::Tensor& img, int64_t padding, Rng& rng);
torch::Tensor hflip(const torch::Tensor& img);
/// uint8 in, uint8 out. `spec` as timm's rand_augment_transform ("rand-m9-n2-mstd0.5").
torch::Tensor rand_augment(const torch::Tensor& img, const std::string& spec, Rng& rng);
/// A parsed RandAugment spec: timm's rand_augment_transform grammar "rand-<section>-..." with
/// sections m<int> (magnitude, default 10), n<int> (ops per image, 2), mstd<float> (magnitude
/// noise; > 100 = uniform in [0, m]), mmax<int> (magnitude clip, 10), inc<0|1> (the *Increasing
/// op variants, as timm's "inc1"), p<float> (probability each chosen op is applied, 0.5).
struct RandAugmentSpec {
  int magnitude = 10;
  int num_layers = 2;
  double magnitude_std = 0.0;
  double magnitude_max = 10.0;
  bool increasing = false;
  double prob = 0.5;
  std::string interpolation = "bilinear";  ///< rotate/shear/translate resampling (bilinear, bicubic, nearest)
};
/// Throws ConfigError listing the accepted sections when `spec` is malformed.
RandAugmentSpec parse_rand_augment(const std::string& spec);
/// PIL's Image.transform(AFFINE, m, resample, fillcolor) on uint8 [C, H, W]: output pixel centre
/// (x, y) samples the input at (m0 x + m1 y + m2, m3 x + m4 y + m5), with PIL's bilinear, bicubic
/// (cubic convolution, a = -1) or nearest filter, clipped and truncated to uint8; samples outside
/// the image take `fill`. RandAugment's rotate, shear and translate are this.
torch::Tensor pil_affine(const torch::Tensor& img, const std::array<double, 6>& m, const std::vector<double>& fill,
                         const std::string& interpolation);
/// As rand_augment(img, spec-string, rng); `fill` (0..255, one value or one per channel) paints
/// the pixels rotate/shear/translate uncover (timm uses the normalisation mean).
torch::Tensor rand_augment(const torch::Tensor& img, const RandAugmentSpec& spec, Rng& rng,
                           const std::vector<double>& fill = {128.0});
torch::Tensor normalize(const torch::Tensor& img_float01, const std::vector<double>& mean,
                        const std::vector<double>& std);
/// In-place-style random erasing on a normalised float image (timm's RandomErasing, mode 'pixel').
/// With `pixel8_mean` and `pixel8_std` (per channel, in [0, 1] units), the noise is mmpretrain's
/// 8-bit N(mean, std) clipped and truncated, then normalised with the same mean and std.
torch::Tensor random_erasing(const torch::Tensor& img, double probability, Rng& rng,
                             const std::vector<double>& pixel8_mean = {}, const std::vector<double>& pixel8_std = {});

/// Mixup / CutMix over a batch (timm's Mixup, mode 'batch'). `labels` int64 [B] become soft
/// targets [B, num_classes] with label smoothing folded in (timm's mixup_target).
struct MixResult {
  torch::Tensor images;   ///< float [B, C, H, W]
  torch::Tensor targets;  ///< float [B, num_classes], rows sum to 1
  double lambda = 1.0;
};
MixResult mix_batch(const torch::Tensor& images, const torch::Tensor& labels, int64_t num_classes,
                    const AugmentConfig& config, double label_smoothing, Rng& rng);

/// Smoothed one-hot targets: (1 - s) on the label, s / K spread uniformly (timm convention).
torch::Tensor smooth_one_hot(const torch::Tensor& labels, int64_t num_classes, double smoothing);

}  // namespace moejet::data
