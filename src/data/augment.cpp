// Per-sample transforms and the train/eval pipelines. Geometry follows torchvision/timm so that
// a recipe tuned in timm behaves the same here: RandomResizedCrop's 10-attempt sampling with a
// centre-crop fallback, Resize(shorter side) + CenterCrop for eval with crop_pct, RandomCrop with
// zero padding, and timm's RandomErasing in 'pixel' mode. Python's round() is round-half-even,
// hence std::nearbyint wherever torchvision rounds.

#include <algorithm>
#include <cmath>
#include <random>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/augment.h"

namespace moejet::data {

namespace F = torch::nn::functional;

namespace {

double uniform(Rng& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

int64_t randint(Rng& rng, int64_t lo, int64_t hi_inclusive) {
  return std::uniform_int_distribution<int64_t>(lo, hi_inclusive)(rng);
}

int64_t round_half_even(double v) {
  return static_cast<int64_t>(std::nearbyint(v));
}

void check_image(const torch::Tensor& img, const char* what) {
  check<DataError>(img.dim() == 3 && img.numel() > 0, "{}: expected an image [C, H, W], got [{}]", what,
                   fmt::join(img.sizes(), ", "));
}

/// Resizes so that the shorter side is `size` (torchvision's Resize(int)).
torch::Tensor resize_shorter(const torch::Tensor& img, int64_t size, const std::string& interpolation) {
  const int64_t h = img.size(1), w = img.size(2);
  if (std::min(h, w) == size) {
    return img;
  }
  if (w <= h) {
    return resize(img, size * h / w, size, interpolation);
  }
  return resize(img, size, size * w / h, interpolation);
}

torch::Tensor to_float01(const torch::Tensor& img) {
  return img.scalar_type() == torch::kByte ? img.to(torch::kFloat).div_(255.0) : img.to(torch::kFloat);
}

/// One value per channel: empty -> `fallback`, one value -> broadcast, else must match.
std::vector<double> per_channel(const std::vector<double>& v, int64_t channels, double fallback, const char* what) {
  if (v.empty()) {
    return std::vector<double>(static_cast<size_t>(channels), fallback);
  }
  if (v.size() == 1) {
    return std::vector<double>(static_cast<size_t>(channels), v[0]);
  }
  check<ConfigError>(static_cast<int64_t>(v.size()) == channels,
                     "augment.{}: {} values for an image with {} channel(s)", what, v.size(), channels);
  return v;
}

void validate_pipeline(const AugmentConfig& c, int64_t channels) {
  check<ConfigError>(channels == 1 || channels == 3, "transform: channels must be 1 or 3, got {}", channels);
  per_channel(c.mean, channels, 0.5, "mean");
  for (double s : per_channel(c.std, channels, 0.5, "std")) {
    check<ConfigError>(s > 0.0, "augment.std: values must be > 0, got {}", s);
  }
}

}  // namespace

// --- single transforms ----------------------------------------------------------------------

torch::Tensor resize(const torch::Tensor& img, int64_t h, int64_t w, const std::string& interpolation) {
  check_image(img, "resize");
  check<DataError>(h > 0 && w > 0, "resize: target size must be positive, got {}x{}", h, w);
  if (img.size(1) == h && img.size(2) == w) {
    return img;
  }
  const bool is_byte = img.scalar_type() == torch::kByte;
  auto x = img.to(torch::kFloat).unsqueeze(0);
  auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w});
  // Anti-aliasing when shrinking matches PIL (which timm's pipelines use); without it a
  // downscaled image aliases badly.
  const bool shrinking = h < img.size(1) || w < img.size(2);
  if (interpolation == "nearest") {
    opts.mode(torch::kNearest);
  } else if (interpolation == "bicubic") {
    opts.mode(torch::kBicubic).align_corners(false).antialias(shrinking);
  } else if (interpolation == "bilinear") {
    opts.mode(torch::kBilinear).align_corners(false).antialias(shrinking);
  } else {
    throw ConfigError(
        fmt::format("resize: unknown interpolation '{}' (expected bilinear, bicubic or nearest)", interpolation));
  }
  auto out = F::interpolate(x, opts).squeeze(0);
  if (is_byte) {
    return out.round_().clamp_(0, 255).to(torch::kByte);
  }
  return out;
}

torch::Tensor center_crop(const torch::Tensor& img, int64_t h, int64_t w) {
  check_image(img, "center_crop");
  int64_t ih = img.size(1), iw = img.size(2);
  torch::Tensor x = img;
  if (h > ih || w > iw) {
    // torchvision pads an image smaller than the crop with zeros, centred.
    const int64_t ph = std::max<int64_t>(h - ih, 0), pw = std::max<int64_t>(w - iw, 0);
    x = torch::constant_pad_nd(x, {pw / 2, (pw + 1) / 2, ph / 2, (ph + 1) / 2}, 0);
    ih = x.size(1);
    iw = x.size(2);
  }
  const int64_t top = round_half_even((ih - h) / 2.0);
  const int64_t left = round_half_even((iw - w) / 2.0);
  return x.slice(1, top, top + h).slice(2, left, left + w).contiguous();
}

torch::Tensor random_resized_crop(const torch::Tensor& img, int64_t size, double scale_min, double scale_max,
                                  double ratio_min, double ratio_max, const std::string& interpolation, Rng& rng) {
  check_image(img, "random_resized_crop");
  const int64_t height = img.size(1), width = img.size(2);
  const double area = static_cast<double>(height * width);
  const double log_r0 = std::log(ratio_min), log_r1 = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform(rng, scale_min, scale_max);
    const double aspect = std::exp(uniform(rng, log_r0, log_r1));
    const int64_t w = round_half_even(std::sqrt(target_area * aspect));
    const int64_t h = round_half_even(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int64_t i = randint(rng, 0, height - h);
      const int64_t j = randint(rng, 0, width - w);
      return resize(img.slice(1, i, i + h).slice(2, j, j + w), size, size, interpolation);
    }
  }
  // Fallback: the largest centred crop whose aspect ratio is within range.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio_min) {
    h = round_half_even(static_cast<double>(w) / ratio_min);
  } else if (in_ratio > ratio_max) {
    w = round_half_even(static_cast<double>(h) * ratio_max);
  }
  const int64_t i = (height - h) / 2, j = (width - w) / 2;
  return resize(img.slice(1, i, i + h).slice(2, j, j + w), size, size, interpolation);
}

torch::Tensor pad_random_crop(const torch::Tensor& img, int64_t padding, Rng& rng) {
  check_image(img, "pad_random_crop");
  if (padding <= 0) {
    return img;
  }
  const int64_t h = img.size(1), w = img.size(2);
  auto padded = torch::constant_pad_nd(img, {padding, padding, padding, padding}, 0);
  const int64_t i = randint(rng, 0, 2 * padding);
  const int64_t j = randint(rng, 0, 2 * padding);
  return padded.slice(1, i, i + h).slice(2, j, j + w).contiguous();
}

torch::Tensor hflip(const torch::Tensor& img) {
  check_image(img, "hflip");
  return img.flip({-1});
}

torch::Tensor normalize(const torch::Tensor& img_float01, const std::vector<double>& mean,
                        const std::vector<double>& std) {
  check_image(img_float01, "normalize");
  const int64_t c = img_float01.size(0);
  auto m = per_channel(mean, c, 0.5, "mean");
  auto s = per_channel(std, c, 0.5, "std");
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  auto mt = torch::tensor(std::vector<float>(m.begin(), m.end()), opts).view({c, 1, 1});
  auto st = torch::tensor(std::vector<float>(s.begin(), s.end()), opts).view({c, 1, 1});
  return (img_float01.to(torch::kFloat) - mt) / st;
}

torch::Tensor random_erasing(const torch::Tensor& img, double probability, Rng& rng,
                             const std::vector<double>& pixel8_mean, const std::vector<double>& pixel8_std) {
  check_image(img, "random_erasing");
  check<DataError>(img.is_floating_point(), "random_erasing: expected a normalised float image, got {}",
                   std::string(c10::toString(img.scalar_type())));
  // timm's defaults: area fraction in [0.02, 1/3], log aspect ratio in [log 0.3, log 1/0.3].
  constexpr double kMinArea = 0.02, kMaxArea = 1.0 / 3.0, kMinAspect = 0.3;
  if (uniform(rng, 0.0, 1.0) > probability) {
    return img;
  }
  const int64_t c = img.size(0), ih = img.size(1), iw = img.size(2);
  const double area = static_cast<double>(ih * iw);
  const double log_a0 = std::log(kMinAspect), log_a1 = std::log(1.0 / kMinAspect);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = uniform(rng, kMinArea, kMaxArea) * area;
    const double aspect = std::exp(uniform(rng, log_a0, log_a1));
    const int64_t h = round_half_even(std::sqrt(target_area * aspect));
    const int64_t w = round_half_even(std::sqrt(target_area / aspect));
    if (w < iw && h < ih) {
      const int64_t top = randint(rng, 0, ih - h);
      const int64_t left = randint(rng, 0, iw - w);
      // Noise from a generator seeded by `rng` keeps erasing reproducible per sample and
      // independent of the global torch generator other threads use.
      auto gen = at::detail::createCPUGenerator(rng());
      auto noise = torch::randn({c, h, w}, gen, torch::TensorOptions().dtype(img.scalar_type()));
      if (!pixel8_mean.empty()) {
        // mmpretrain: N(mean, std) in 8-bit units, clipped and stored as uint8, then normalised
        // like the rest of the image: (trunc(clip(255 (m + s z))) / 255 - m) / s.
        auto m = torch::tensor(per_channel(pixel8_mean, c, 0.5, "mean"), noise.options()).view({c, 1, 1});
        auto sd = torch::tensor(per_channel(pixel8_std, c, 0.5, "std"), noise.options()).view({c, 1, 1});
        auto px = ((m + sd * noise) * 255.0).clamp(0.0, 255.0).floor();
        noise = (px / 255.0 - m) / sd;
      }
      auto out = img.clone();
      out.slice(1, top, top + h).slice(2, left, left + w).copy_(noise);
      return out;
    }
  }
  return img;
}

// --- pipelines ------------------------------------------------------------------------------

Transform make_train_transform(const AugmentConfig& config, int64_t channels) {
  validate_pipeline(config, channels);
  const auto mean = per_channel(config.mean, channels, 0.5, "mean");
  const auto std = per_channel(config.std, channels, 0.5, "std");
  const bool use_ra = !config.randaugment.empty();
  RandAugmentSpec ra = use_ra ? parse_rand_augment(config.randaugment) : RandAugmentSpec{};
  ra.interpolation = config.randaugment_interpolation.empty() ? config.interpolation : config.randaugment_interpolation;
  const bool pixel8 = config.random_erasing_noise == "pixel8";
  // timm fills the pixels that rotate/shear/translate uncover with the mean colour.
  std::vector<double> fill;
  for (double m : mean) {
    fill.push_back(std::min(255.0, std::nearbyint(255.0 * m)));
  }
  const AugmentConfig c = config;
  return [c, mean, std, use_ra, ra, fill, pixel8](const torch::Tensor& image, Rng& rng) {
    check_image(image, "train transform");
    torch::Tensor x = image;
    if (c.random_resized_crop) {
      const int64_t size = c.image_size > 0 ? c.image_size : std::min(x.size(1), x.size(2));
      x = random_resized_crop(x, size, c.rrc_scale_min, c.rrc_scale_max, c.rrc_ratio_min, c.rrc_ratio_max,
                              c.interpolation, rng);
    } else if (c.image_size > 0) {
      x = center_crop(resize_shorter(x, c.image_size, c.interpolation), c.image_size, c.image_size);
    }
    if (c.random_crop_padding > 0) {
      x = pad_random_crop(x, c.random_crop_padding, rng);
    }
    if (c.hflip > 0 && uniform(rng, 0.0, 1.0) < c.hflip) {
      x = hflip(x);
    }
    if (use_ra) {
      x = rand_augment(x, ra, rng, fill);
    }
    x = normalize(to_float01(x), mean, std);
    if (c.random_erasing > 0) {
      x = pixel8 ? random_erasing(x, c.random_erasing, rng, mean, std) : random_erasing(x, c.random_erasing, rng);
    }
    return x.contiguous();
  };
}

Transform make_eval_transform(const AugmentConfig& config, int64_t channels) {
  validate_pipeline(config, channels);
  const auto mean = per_channel(config.mean, channels, 0.5, "mean");
  const auto std = per_channel(config.std, channels, 0.5, "std");
  const AugmentConfig c = config;
  return [c, mean, std](const torch::Tensor& image, Rng&) {
    check_image(image, "eval transform");
    const int64_t size = c.image_size > 0 ? c.image_size : std::min(image.size(1), image.size(2));
    // timm: scale_size = floor(img_size / crop_pct), Resize(scale_size), CenterCrop(img_size).
    const auto scale = static_cast<int64_t>(std::floor(static_cast<double>(size) / c.crop_pct));
    torch::Tensor x = center_crop(resize_shorter(image, scale, c.interpolation), size, size);
    return normalize(to_float01(x), mean, std).contiguous();
  };
}

}  // namespace moejet::data
