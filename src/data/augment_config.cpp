#include "moejet/data/augment_config.h"

#include "moejet/data/augment.h"

namespace moejet::data {

namespace {

void check_prob(double p, const std::string& path, const char* key) {
  check<ConfigError>(p >= 0.0 && p <= 1.0, "config '{}{}': probability must be in [0, 1], got {}",
                     path.empty() ? "" : path + ".", key, p);
}

}  // namespace

void to_json(json& j, const AugmentConfig& c) {
  j = config_to_json(c);
}

void from_json_checked(const json& j, AugmentConfig& c, const std::string& path) {
  read_config(j, c, path);
  c.validate(path);
}

void AugmentConfig::validate(const std::string& path) const {
  const AugmentConfig& c = *this;
  const std::string p = path.empty() ? "" : path + ".";
  check<ConfigError>(c.image_size >= 0, "config '{}image_size': must be >= 0, got {}", p, c.image_size);
  check<ConfigError>(c.rrc_scale_min > 0 && c.rrc_scale_min <= c.rrc_scale_max && c.rrc_scale_max <= 1.0,
                     "config '{}rrc_scale_min/max': need 0 < min <= max <= 1, got {} / {}", p, c.rrc_scale_min,
                     c.rrc_scale_max);
  check<ConfigError>(c.rrc_ratio_min > 0 && c.rrc_ratio_min <= c.rrc_ratio_max,
                     "config '{}rrc_ratio_min/max': need 0 < min <= max, got {} / {}", p, c.rrc_ratio_min,
                     c.rrc_ratio_max);
  check<ConfigError>(c.random_crop_padding >= 0, "config '{}random_crop_padding': must be >= 0, got {}", p,
                     c.random_crop_padding);
  check_prob(c.hflip, path, "hflip");
  check_prob(c.random_erasing, path, "random_erasing");
  check_prob(c.mix_prob, path, "mix_prob");
  check_prob(c.mix_switch_prob, path, "mix_switch_prob");
  check<ConfigError>(c.crop_pct > 0 && c.crop_pct <= 1.0, "config '{}crop_pct': must be in (0, 1], got {}", p,
                     c.crop_pct);
  check<ConfigError>(c.interpolation == "bilinear" || c.interpolation == "bicubic" || c.interpolation == "nearest",
                     "config '{}interpolation': expected bilinear, bicubic or nearest, got '{}'", p, c.interpolation);
  check<ConfigError>(c.randaugment_interpolation.empty() || c.randaugment_interpolation == "bilinear" ||
                         c.randaugment_interpolation == "bicubic" || c.randaugment_interpolation == "nearest",
                     "config '{}randaugment_interpolation': expected \"\" (= interpolation), bilinear, bicubic or "
                     "nearest, got '{}'",
                     p, c.randaugment_interpolation);
  check<ConfigError>(c.random_erasing_noise == "normal" || c.random_erasing_noise == "pixel8",
                     "config '{}random_erasing_noise': expected normal or pixel8, got '{}'", p, c.random_erasing_noise);
  check<ConfigError>(c.mix_partner == "flip" || c.mix_partner == "permute",
                     "config '{}mix_partner': expected flip or permute, got '{}'", p, c.mix_partner);
  for (const auto* v : {&c.mean, &c.std}) {
    check<ConfigError>(v->size() <= 1 || v->size() == 3, "config '{}{}': expected 0, 1 or 3 values, got {}", p,
                       v == &c.mean ? "mean" : "std", v->size());
  }
  for (double s : c.std) {
    check<ConfigError>(s > 0, "config '{}std': values must be > 0, got {}", p, s);
  }
  check<ConfigError>(c.mixup_alpha >= 0 && c.cutmix_alpha >= 0,
                     "config '{}mixup_alpha/cutmix_alpha': must be >= 0, got {} / {}", p, c.mixup_alpha,
                     c.cutmix_alpha);
  if (!c.randaugment.empty()) {
    try {
      parse_rand_augment(c.randaugment);
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("config '{}randaugment': {}", p, e.what()));
    }
  }
}

}  // namespace moejet::data
