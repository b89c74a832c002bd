// Batch-level Mixup / CutMix, following timm's Mixup in 'batch' mode (timm/data/mixup.py): one
// lambda per batch, each image mixed with its mirror in the batch (images.flip(0)), or with
// mix_partner "permute" with a random permutation of the batch (mmpretrain's, the MoE Jetpack
// authors'), CutMix's lambda corrected to the true area of the clipped box, label smoothing folded
// into the targets.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/augment.h"

namespace moejet::data {

namespace {

/// Beta(alpha, alpha) as X / (X + Y) with X, Y ~ Gamma(alpha, 1).
double sample_beta(double alpha, Rng& rng) {
  std::gamma_distribution<double> gamma(alpha, 1.0);
  const double x = gamma(rng), y = gamma(rng);
  // Tiny alphas can underflow both draws to 0; the limit distribution puts its mass at 0 and 1.
  if (x + y <= 0.0) {
    return uniform01(rng) < 0.5 ? 0.0 : 1.0;
  }
  return x / (x + y);
}

void check_labels(const torch::Tensor& labels, int64_t num_classes, const char* what) {
  check<DataError>(labels.dim() == 1, "{}: labels must be [B], got [{}]", what, fmt::join(labels.sizes(), ", "));
  check<DataError>(num_classes > 0, "{}: num_classes must be > 0, got {}", what, num_classes);
  if (labels.numel() > 0) {
    const auto lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    check<DataError>(lo >= 0 && hi < num_classes, "{}: labels span [{}, {}], outside [0, {})", what, lo, hi,
                     num_classes);
  }
}

}  // namespace

torch::Tensor smooth_one_hot(const torch::Tensor& labels, int64_t num_classes, double smoothing) {
  check_labels(labels, num_classes, "smooth_one_hot");
  check<ConfigError>(smoothing >= 0.0 && smoothing < 1.0, "label smoothing must be in [0, 1), got {}", smoothing);
  // timm's mixup_target convention: every class gets s/K, the label gets 1 - s + s/K.
  const double off = smoothing / static_cast<double>(num_classes);
  const double on = 1.0 - smoothing + off;
  auto idx = labels.to(torch::kLong).view({-1, 1});
  return torch::full({labels.size(0), num_classes}, off,
                     torch::TensorOptions().dtype(torch::kFloat).device(labels.device()))
      .scatter_(1, idx, on);
}

MixResult mix_batch(const torch::Tensor& images, const torch::Tensor& labels, int64_t num_classes,
                    const AugmentConfig& config, double label_smoothing, Rng& rng) {
  check<DataError>(images.dim() == 4, "mix_batch: images must be [B, C, H, W], got [{}]",
                   fmt::join(images.sizes(), ", "));
  check<DataError>(labels.dim() == 1 && labels.size(0) == images.size(0), "mix_batch: {} labels for {} images",
                   labels.numel(), images.size(0));
  auto target = smooth_one_hot(labels, num_classes, label_smoothing);

  double lam = 1.0;
  bool use_cutmix = false;
  const bool mixup_on = config.mixup_alpha > 0, cutmix_on = config.cutmix_alpha > 0;
  if ((mixup_on || cutmix_on) && uniform01(rng) < config.mix_prob) {
    if (mixup_on && cutmix_on) {
      use_cutmix = uniform01(rng) < config.mix_switch_prob;
      lam = sample_beta(use_cutmix ? config.cutmix_alpha : config.mixup_alpha, rng);
    } else if (mixup_on) {
      lam = sample_beta(config.mixup_alpha, rng);
    } else {
      use_cutmix = true;
      lam = sample_beta(config.cutmix_alpha, rng);
    }
  }
  if (lam == 1.0) {
    return {images, target, 1.0};
  }

  // The partner of each image. A shuffled batch makes both choices the same distribution of pairs.
  torch::Tensor partner_images, partner_target;
  if (config.mix_partner == "permute") {
    std::vector<int64_t> perm(static_cast<size_t>(images.size(0)));
    std::iota(perm.begin(), perm.end(), int64_t{0});
    std::shuffle(perm.begin(), perm.end(), rng);
    auto idx = torch::tensor(perm, torch::kLong).to(images.device());
    partner_images = images.index_select(0, idx);
    partner_target = target.index_select(0, idx);
  } else {
    partner_images = images.flip(0);
    partner_target = target.flip(0);
  }
  torch::Tensor mixed;
  if (use_cutmix) {
    // timm's rand_bbox: a box of side sqrt(1 - lam) times the image's, centred uniformly,
    // clipped to the image; lam is then recomputed from the clipped area.
    const int64_t h = images.size(2), w = images.size(3);
    const double ratio = std::sqrt(1.0 - lam);
    const auto cut_h = static_cast<int64_t>(static_cast<double>(h) * ratio);
    const auto cut_w = static_cast<int64_t>(static_cast<double>(w) * ratio);
    const int64_t cy = std::uniform_int_distribution<int64_t>(0, h - 1)(rng);
    const int64_t cx = std::uniform_int_distribution<int64_t>(0, w - 1)(rng);
    const int64_t yl = std::clamp<int64_t>(cy - cut_h / 2, 0, h);
    const int64_t yh = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
    const int64_t xl = std::clamp<int64_t>(cx - cut_w / 2, 0, w);
    const int64_t xh = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
    mixed = images.clone();
    mixed.slice(2, yl, yh).slice(3, xl, xh).copy_(partner_images.slice(2, yl, yh).slice(3, xl, xh));
    lam = 1.0 - static_cast<double>((yh - yl) * (xh - xl)) / static_cast<double>(h * w);
  } else {
    mixed = images * lam + partner_images * (1.0 - lam);
  }
  auto targets = target * lam + partner_target * (1.0 - lam);
  return {mixed, targets, lam};
}

}  // namespace moejet::data
