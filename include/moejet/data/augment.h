#pragma once
// Per-sample image transforms and batch-level mixing, configured by AugmentConfig
// (augment_config.h). Transforms are deterministic
// given a seed: the loader seeds each sample's generator from (seed, epoch, index), so a resumed run
// sees exactly the augmentations an uninterrupted one would, whatever the thread scheduling.

#include <array>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/data/augment_config.h"

namespace moejet::data {

using Rng = std::mt19937_64;

/// A uniform draw in [0, 1) (the augmentations' coin flips).
inline double uniform01(Rng& rng) {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

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
torch::Tensor random_resized_crop(const torch::Tensor& img, int64_t size, double scale_min, double scale_max,
                                  double ratio_min, double ratio_max, const std::string& interpolation, Rng& rng);
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
