// Transforms, RandAugment, random erasing, Mixup/CutMix and AugmentConfig's JSON form.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/augment.h"
#include "test_util.h"

namespace moejet::data {
namespace {

using moejet::testing::all_close;
using moejet::testing::throws_error;

torch::Tensor random_image(int64_t c, int64_t h, int64_t w, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, 256, {c, h, w}, gen, torch::kByte);
}

// --- config ---------------------------------------------------------------------------------

TEST(AugmentConfig, JsonRoundTrip) {
  AugmentConfig c;
  c.image_size = 224;
  c.random_resized_crop = true;
  c.rrc_scale_min = 0.2;
  c.hflip = 0.5;
  c.randaugment = "rand-m9-mstd0.5-inc1";
  c.random_erasing = 0.25;
  c.crop_pct = 0.875;
  c.interpolation = "bicubic";
  c.mean = {0.485, 0.456, 0.406};
  c.std = {0.229, 0.224, 0.225};
  c.mixup_alpha = 0.8;
  c.cutmix_alpha = 1.0;
  json j = c;
  AugmentConfig d;
  from_json_checked(j, d, "augment");
  EXPECT_EQ(json(d), j);
  EXPECT_EQ(d.image_size, 224);
  EXPECT_EQ(d.randaugment, "rand-m9-mstd0.5-inc1");
  EXPECT_EQ(d.std, c.std);
}

TEST(AugmentConfig, StrictKeysAndValues) {
  AugmentConfig c;
  auto expect_config_error = [&](const json& j, const std::string& needle) {
    EXPECT_TRUE(throws_error<ConfigError>(
        [&] {
          AugmentConfig x;
          from_json_checked(j, x, "train.augment");
        },
        {needle}))
        << j.dump();
  };
  expect_config_error({{"hflp", 0.5}}, "train.augment.hflp");
  expect_config_error({{"hflip", "yes"}}, "train.augment.hflip");
  expect_config_error({{"hflip", 1.5}}, "train.augment.hflip");
  expect_config_error({{"interpolation", "lanczos"}}, "interpolation");
  expect_config_error({{"randaugment", "rand-x9"}}, "train.augment.randaugment");
  expect_config_error({{"mean", {0.1, 0.2}}}, "mean");
  expect_config_error({{"crop_pct", 0.0}}, "crop_pct");
  // Absent keys keep their defaults.
  from_json_checked(json::object({{"image_size", 32}}), c, "augment");
  EXPECT_EQ(c.image_size, 32);
  EXPECT_EQ(c.interpolation, "bilinear");
}

// --- geometry -------------------------------------------------------------------------------

TEST(Transforms, FlipIsAnExactMirror) {
  auto img = random_image(3, 5, 7, 1);
  auto f = hflip(img);
  ASSERT_EQ(f.sizes(), img.sizes());
  for (int64_t x = 0; x < 7; ++x) {
    EXPECT_TRUE(torch::equal(f.select(2, x), img.select(2, 6 - x)));
  }
  EXPECT_TRUE(torch::equal(hflip(f), img));
}

TEST(Transforms, CenterCropPicksTheCentre) {
  auto img = torch::arange(16, torch::kByte).view({1, 4, 4});
  auto c = center_crop(img, 2, 2);
  EXPECT_TRUE(torch::equal(c, torch::tensor({5, 6, 9, 10}, torch::kByte).view({1, 2, 2})));
  // torchvision rounds half to even: (5 - 2) / 2 = 1.5 -> 2.
  auto img5 = torch::arange(25, torch::kByte).view({1, 5, 5});
  EXPECT_EQ(center_crop(img5, 2, 2)[0][0][0].item<int64_t>(), 2 * 5 + 2);
  // Larger than the image: zero-padded around it.
  auto big = center_crop(torch::full({1, 2, 2}, 9, torch::kByte), 4, 4);
  EXPECT_EQ(big.sum().item<int64_t>(), 36);
  EXPECT_EQ(big[0][1][1].item<int64_t>(), 9);
  EXPECT_EQ(big[0][0][0].item<int64_t>(), 0);
}

TEST(Transforms, ResizeKeepsDtypeAndConstants) {
  auto flat = torch::full({3, 20, 30}, 77, torch::kByte);
  for (const char* mode : {"bilinear", "bicubic", "nearest"}) {
    auto r = resize(flat, 8, 11, mode);
    ASSERT_EQ(r.sizes(), (std::vector<int64_t>{3, 8, 11})) << mode;
    EXPECT_EQ(r.scalar_type(), torch::kByte);
    EXPECT_TRUE(r.eq(77).all().item<bool>()) << mode;
  }
  // Upscaling a 2-pixel ramp bilinearly stays within the endpoints and is monotone.
  auto ramp = torch::tensor({0.0f, 100.0f}).view({1, 1, 2});
  auto up = resize(ramp, 1, 4, "bilinear");
  EXPECT_TRUE(all_close(up, torch::tensor({0.0f, 25.0f, 75.0f, 100.0f}).view({1, 1, 4})));
  EXPECT_THROW(resize(flat, 4, 4, "lanczos"), ConfigError);
}

TEST(Transforms, RandomResizedCropSizeAndDeterminism) {
  auto img = random_image(3, 40, 50, 2);
  Rng a(7), b(7), c(8);
  auto x = random_resized_crop(img, 24, 0.08, 1.0, 0.75, 4.0 / 3.0, "bilinear", a);
  auto y = random_resized_crop(img, 24, 0.08, 1.0, 0.75, 4.0 / 3.0, "bilinear", b);
  auto z = random_resized_crop(img, 24, 0.08, 1.0, 0.75, 4.0 / 3.0, "bilinear", c);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{3, 24, 24}));
  EXPECT_EQ(x.scalar_type(), torch::kByte);
  EXPECT_TRUE(torch::equal(x, y));
  EXPECT_FALSE(torch::equal(x, z));
  // An unreachable aspect ratio (4) forces the fallback: in_ratio 50/40 < 4, so the crop is the
  // full width by round(50 / 4) = 12 rows (12.5 rounds to even), centred at row (40 - 12) / 2.
  Rng d(1);
  auto fb = random_resized_crop(img, 12, 0.99, 1.0, 4.0, 4.0, "nearest", d);
  ASSERT_EQ(fb.sizes(), (std::vector<int64_t>{3, 12, 12}));
  auto expected = resize(img.slice(1, 14, 26), 12, 12, "nearest");
  EXPECT_TRUE(torch::equal(fb, expected));
}

TEST(Transforms, PadRandomCrop) {
  auto img = random_image(1, 6, 6, 3);
  Rng rng(1);
  EXPECT_TRUE(torch::equal(pad_random_crop(img, 0, rng), img));
  auto padded = torch::constant_pad_nd(img, {2, 2, 2, 2}, 0);
  bool saw_shift = false;
  for (uint64_t s = 0; s < 10; ++s) {
    Rng r(s);
    auto out = pad_random_crop(img, 2, r);
    ASSERT_EQ(out.sizes(), img.sizes());
    bool matched = false;
    for (int64_t i = 0; i <= 4 && !matched; ++i) {
      for (int64_t j = 0; j <= 4 && !matched; ++j) {
        matched = torch::equal(out, padded.slice(1, i, i + 6).slice(2, j, j + 6));
      }
    }
    EXPECT_TRUE(matched) << "seed " << s;
    saw_shift |= !torch::equal(out, img);
  }
  EXPECT_TRUE(saw_shift);
}

TEST(Transforms, NormalizeMath) {
  auto x = torch::tensor({0.0f, 0.5f, 1.0f, 0.25f, 0.75f, 1.0f}).view({2, 1, 3});
  auto y = normalize(x, {0.5, 0.25}, {0.5, 0.25});
  EXPECT_TRUE(all_close(y, torch::tensor({-1.0f, 0.0f, 1.0f, 0.0f, 2.0f, 3.0f}).view({2, 1, 3})));
  // Empty mean/std: 0.5 / 0.5 for every channel, mapping [0, 1] to [-1, 1].
  EXPECT_TRUE(all_close(normalize(x, {}, {}), x * 2 - 1));
  // One value broadcasts.
  EXPECT_TRUE(all_close(normalize(x, {0.0}, {2.0}), x / 2));
  EXPECT_THROW(normalize(x, {0.1, 0.2, 0.3}, {}), ConfigError);
}

// --- RandAugment ----------------------------------------------------------------------------

TEST(RandAugment, ParsesTimmSpecs) {
  auto s = parse_rand_augment("rand-m9-n3-mstd0.5-inc1");
  EXPECT_EQ(s.magnitude, 9);
  EXPECT_EQ(s.num_layers, 3);
  EXPECT_DOUBLE_EQ(s.magnitude_std, 0.5);
  EXPECT_TRUE(s.increasing);
  auto d = parse_rand_augment("rand");
  EXPECT_EQ(d.magnitude, 10);
  EXPECT_EQ(d.num_layers, 2);
  EXPECT_DOUBLE_EQ(d.prob, 0.5);
  EXPECT_FALSE(d.increasing);
  EXPECT_TRUE(std::isinf(parse_rand_augment("rand-mstd101").magnitude_std));
  EXPECT_EQ(parse_rand_augment("rand-m15-mmax15").magnitude_max, 15);
  EXPECT_THROW(parse_rand_augment("augmix-m5"), ConfigError);
  EXPECT_THROW(parse_rand_augment("rand-q5"), ConfigError);
  EXPECT_THROW(parse_rand_augment("rand-m9x"), ConfigError);
  EXPECT_THROW(parse_rand_augment("rand-m"), ConfigError);
}

TEST(RandAugment, KeepsShapeAndDtypeAndChangesImages) {
  for (int64_t c : {1, 3}) {
    auto img = random_image(c, 16, 12, 4);
    int changed = 0;
    for (uint64_t seed = 0; seed < 20; ++seed) {
      for (const char* spec : {"rand-m9-n2", "rand-m9-mstd0.5-inc1", "rand-m9-n2-p1.0"}) {
        Rng rng(seed);
        auto out = rand_augment(img, spec, rng);
        ASSERT_EQ(out.sizes(), img.sizes()) << spec;
        ASSERT_EQ(out.scalar_type(), torch::kByte) << spec;
        changed += !torch::equal(out, img);
        Rng again(seed);
        EXPECT_TRUE(torch::equal(out, rand_augment(img, spec, again))) << spec << " seed " << seed;
      }
    }
    // Each op fires with probability 0.5 (1.0 for p1.0); almost every run changes the image.
    EXPECT_GE(changed, 30) << c << " channel(s)";
  }
  // n0: nothing to apply.
  auto img = random_image(3, 8, 8, 5);
  Rng rng(0);
  EXPECT_TRUE(torch::equal(rand_augment(img, "rand-n0", rng), img));
}

TEST(RandAugment, AffineOpsPaintUncoveredPixelsWithFill) {
  // Rotations, shears and translations at full magnitude always uncover corner pixels; those get
  // the fill colour. A constant image thus only ever takes its own value or the fill (or blends
  // at edges), and with p=1, n=1 we can tell geometric ops apart from colour ops.
  auto img = torch::full({3, 16, 16}, 200, torch::kByte);
  int saw_fill = 0;
  for (uint64_t seed = 0; seed < 150; ++seed) {
    Rng rng(seed);
    auto out = rand_augment(img, parse_rand_augment("rand-m10-n1-p1.0"), rng, {0, 50, 100});
    ASSERT_EQ(out.sizes(), img.sizes());
    if (out[0][0][0].item<int64_t>() == 0 && out[1][0][0].item<int64_t>() == 50 &&
        out[2][0][0].item<int64_t>() == 100) {
      ++saw_fill;
    }
  }
  EXPECT_GT(saw_fill, 5);
}

// --- random erasing -------------------------------------------------------------------------

TEST(RandomErasing, ProbabilityOneErasesARectangleZeroDoesNothing) {
  auto img = torch::full({3, 20, 24}, 5.0f);
  for (uint64_t seed = 0; seed < 10; ++seed) {
    Rng none(seed);
    EXPECT_TRUE(torch::equal(random_erasing(img, 0.0, none), img));
    Rng rng(seed);
    auto out = random_erasing(img, 1.0, rng);
    ASSERT_EQ(out.sizes(), img.sizes());
    auto changed = out.ne(5.0f).any(0);  // [H, W]
    const auto n = changed.sum().item<int64_t>();
    ASSERT_GT(n, 0) << "seed " << seed;
    auto rows = changed.any(1).nonzero().flatten(), cols = changed.any(0).nonzero().flatten();
    const int64_t h = rows.max().item<int64_t>() - rows.min().item<int64_t>() + 1;
    const int64_t w = cols.max().item<int64_t>() - cols.min().item<int64_t>() + 1;
    EXPECT_EQ(n, h * w) << "erased region is not a rectangle";
    EXPECT_GE(n, 4);
    EXPECT_LE(n, 480 / 3 + 24);
    EXPECT_TRUE(img.eq(5.0f).all().item<bool>()) << "input modified";
    Rng again(seed);
    EXPECT_TRUE(torch::equal(out, random_erasing(img, 1.0, again)));
  }
}

// --- pipelines ------------------------------------------------------------------------------

TEST(Pipelines, TrainTransformShapesAndDeterminism) {
  AugmentConfig c;
  c.image_size = 24;
  c.random_resized_crop = true;
  c.hflip = 0.5;
  c.randaugment = "rand-m9-mstd0.5";
  c.random_erasing = 0.25;
  auto t = make_train_transform(c, 3);
  auto img = random_image(3, 32, 40, 6);
  Rng a(3), b(3), d(4);
  auto x = t(img, a);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{3, 24, 24}));
  EXPECT_EQ(x.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(x, t(img, b)));
  EXPECT_FALSE(torch::equal(x, t(img, d)));

  // Grey images and keep-size: pad-crop + flip + normalise only.
  AugmentConfig g;
  g.random_crop_padding = 2;
  g.hflip = 0.5;
  auto tg = make_train_transform(g, 1);
  auto grey = random_image(1, 28, 28, 7);
  Rng r(1);
  auto y = tg(grey, r);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_GE(y.min().item<float>(), -1.0f);
  EXPECT_LE(y.max().item<float>(), 1.0f);
  EXPECT_THROW(make_train_transform(c, 2), ConfigError);
  AugmentConfig bad_mean;
  bad_mean.mean = {0.1, 0.2, 0.3};
  EXPECT_THROW(make_train_transform(bad_mean, 1), ConfigError);
}

TEST(Pipelines, EvalResizesShorterSideThenCropsCentre) {
  AugmentConfig c;
  c.image_size = 32;
  c.crop_pct = 0.8;  // scale size floor(32 / 0.8) = 40
  c.mean = {0.0};
  c.std = {1.0};
  auto t = make_eval_transform(c, 3);
  auto img = random_image(3, 40, 60, 8);  // shorter side already 40: no resize
  Rng rng(0);
  auto out = t(img, rng);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 32, 32}));
  auto expected = center_crop(img, 32, 32).to(torch::kFloat) / 255.0;
  EXPECT_TRUE(all_close(out, expected));

  // Shorter side 20 -> 40 (the other side 60 -> 120), then the centre 32x32.
  auto small = random_image(3, 20, 30, 9);
  auto out2 = t(small, rng);
  auto expected2 = center_crop(resize(small, 40, 60, "bilinear"), 32, 32).to(torch::kFloat) / 255;
  EXPECT_TRUE(all_close(out2, expected2));

  // image_size 0, crop_pct 1: only normalisation.
  auto keep = make_eval_transform(AugmentConfig{}, 1);
  auto g = random_image(1, 28, 28, 10);
  EXPECT_TRUE(all_close(keep(g, rng), g.to(torch::kFloat) / 127.5 - 1.0));
}

// --- Mixup / CutMix -------------------------------------------------------------------------

TEST(Mix, SmoothOneHotValues) {
  auto t = smooth_one_hot(torch::tensor({3, 0}, torch::kLong), 10, 0.1);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_NEAR(t[0][3].item<float>(), 0.91f, 1e-6);
  EXPECT_NEAR(t[0][0].item<float>(), 0.01f, 1e-6);
  EXPECT_NEAR(t[1][0].item<float>(), 0.91f, 1e-6);
  EXPECT_TRUE(all_close(t.sum(1), torch::ones({2})));
  auto hard = smooth_one_hot(torch::tensor({1}, torch::kLong), 3, 0.0);
  EXPECT_TRUE(torch::equal(hard, torch::tensor({{0.0f, 1.0f, 0.0f}})));
  EXPECT_THROW(smooth_one_hot(torch::tensor({3}, torch::kLong), 3, 0.1), DataError);
}

TEST(Mix, MixupBlendsWithTheFlippedBatch) {
  AugmentConfig c;
  c.mixup_alpha = 0.8;
  auto images = torch::rand({4, 3, 5, 5});
  auto labels = torch::tensor({0, 1, 2, 3}, torch::kLong);
  int mixed = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng rng(seed);
    auto r = mix_batch(images, labels, 5, c, 0.1, rng);
    ASSERT_GE(r.lambda, 0.0);
    ASSERT_LE(r.lambda, 1.0);
    mixed += r.lambda < 1.0;
    EXPECT_TRUE(all_close(r.targets.sum(1), torch::ones({4})));
    const double lam = r.lambda;
    EXPECT_TRUE(all_close(r.images, images * lam + images.flip(0) * (1 - lam)));
    // Row 0 mixes label 0 with label 3 (its mirror).
    const double off = 0.1 / 5, on = 1 - 0.1 + off;
    EXPECT_NEAR(r.targets[0][0].item<double>(), lam * on + (1 - lam) * off, 1e-5);
    EXPECT_NEAR(r.targets[0][3].item<double>(), lam * off + (1 - lam) * on, 1e-5);
    EXPECT_NEAR(r.targets[0][1].item<double>(), off, 1e-6);
  }
  EXPECT_EQ(mixed, 20);

  // mix_prob 0: untouched images, smoothed one-hot targets, lambda 1.
  c.mix_prob = 0.0;
  Rng rng(1);
  auto r = mix_batch(images, labels, 5, c, 0.1, rng);
  EXPECT_EQ(r.lambda, 1.0);
  EXPECT_TRUE(torch::equal(r.images, images));
  EXPECT_TRUE(all_close(r.targets, smooth_one_hot(labels, 5, 0.1)));
}

TEST(Mix, CutmixLambdaIsOneMinusBoxArea) {
  AugmentConfig c;
  c.cutmix_alpha = 1.0;
  const int64_t b = 4, h = 16, w = 20;
  // Image i is constant i + 1, so pasted pixels are recognisable.
  auto images = (torch::arange(b, torch::kFloat) + 1).view({b, 1, 1, 1}).expand({b, 3, h, w});
  images = images.contiguous();
  auto labels = torch::tensor({0, 1, 2, 3}, torch::kLong);
  int boxes = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    Rng rng(seed);
    auto r = mix_batch(images, labels, 4, c, 0.0, rng);
    ASSERT_GE(r.lambda, 0.0);
    ASSERT_LE(r.lambda, 1.0);
    // Image 0 receives image 3's pixels inside the box.
    const double pasted = r.images[0][0].eq(4.0f).sum().item<double>() / double(h * w);
    EXPECT_NEAR(r.lambda, 1.0 - pasted, 1e-9) << "seed " << seed;
    EXPECT_TRUE(r.images[0].eq(1.0f).logical_or(r.images[0].eq(4.0f)).all().item<bool>());
    EXPECT_NEAR(r.targets[0][0].item<double>(), r.lambda, 1e-6);
    EXPECT_NEAR(r.targets[0][3].item<double>(), 1 - r.lambda, 1e-6);
    boxes += pasted > 0;
  }
  EXPECT_GT(boxes, 20);

  // Both on with switch prob 1: always cutmix (pixels are never blends).
  c.mixup_alpha = 1.0;
  c.mix_switch_prob = 1.0;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    Rng rng(seed);
    auto r = mix_batch(images, labels, 4, c, 0.0, rng);
    EXPECT_TRUE(r.images[1].eq(2.0f).logical_or(r.images[1].eq(3.0f)).all().item<bool>());
  }
}

// --- the authors' (mmpretrain / PIL) variants -------------------------------------------------

TEST(RandAugment, AffineResamplesAsPilsTransformFilters) {
  // One bright pixel shifted by half a pixel: PIL's bilinear splits it 100/100; its bicubic
  // (cubic convolution with a = -1, weights -1/8, 5/8, 5/8, -1/8 at t = 1/2) gives 125 to the two
  // nearest pixels and clips the negative lobes to 0; nearest moves it whole.
  auto img = torch::zeros({1, 9, 9}, torch::kByte);
  img[0][4][4] = 200;
  const std::array<double, 6> half{1, 0, 0.5, 0, 1, 0};
  auto row = [](const torch::Tensor& t) {
    auto r = t[0][4].to(torch::kLong).contiguous();
    return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
  };
  EXPECT_EQ(row(pil_affine(img, half, {0}, "bilinear")), (std::vector<int64_t>{0, 0, 0, 100, 100, 0, 0, 0, 0}));
  EXPECT_EQ(row(pil_affine(img, half, {0}, "bicubic")), (std::vector<int64_t>{0, 0, 0, 125, 125, 0, 0, 0, 0}));
  EXPECT_EQ(row(pil_affine(img, half, {0}, "nearest")), (std::vector<int64_t>{0, 0, 0, 200, 0, 0, 0, 0, 0}));
  // Other rows sample on pixel centres vertically: untouched.
  EXPECT_EQ(pil_affine(img, half, {0}, "bicubic")[0][3].sum().item<int64_t>(), 0);
  // PIL truncates: 10 and 11 blended half and half is 10, not 10.5 rounded.
  auto ramp = torch::full({1, 4, 4}, 10, torch::kByte);
  ramp.narrow(2, 2, 2).fill_(11);
  EXPECT_EQ(pil_affine(ramp, half, {0}, "bilinear")[0][1][1].item<int64_t>(), 10);
  // The last column samples beyond the image: the fill colour.
  EXPECT_EQ(pil_affine(ramp, half, {77}, "bicubic")[0][1][3].item<int64_t>(), 77);
  // Bicubic overshoot is clipped to 255.
  auto edge = torch::zeros({1, 4, 8}, torch::kByte);
  edge.narrow(2, 4, 4).fill_(255);
  auto e = pil_affine(edge, half, {0}, "bicubic");
  EXPECT_EQ(e.max().item<int64_t>(), 255);
  EXPECT_THROW(pil_affine(torch::zeros({4, 4}), half, {0}, "bilinear"), DataError);
}

TEST(RandAugment, TheTrainPipelineResamplesWithItsInterpolationUnlessTold) {
  // A translate-only world is not selectable, so compare whole pipelines: the same seed with
  // bicubic resampling differs from bilinear somewhere over a few images, and the explicit
  // randaugment_interpolation restores bilinear under a bicubic pipeline.
  AugmentConfig c;
  c.randaugment = "rand-m9-n2-p1.0";
  c.interpolation = "bicubic";
  auto bicubic = make_train_transform(c, 3);
  c.randaugment_interpolation = "bilinear";
  auto forced = make_train_transform(c, 3);
  c.interpolation = "bilinear";
  c.randaugment_interpolation = "";
  auto bilinear = make_train_transform(c, 3);
  int differ = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    auto img = random_image(3, 16, 16, seed);
    Rng r1(seed), r2(seed), r3(seed);
    auto a = bicubic(img, r1), b = bilinear(img, r2), f = forced(img, r3);
    EXPECT_TRUE(torch::equal(b, f)) << seed;
    differ += !torch::equal(a, b);
  }
  EXPECT_GT(differ, 5);
}

TEST(RandomErasing, Pixel8NoiseIsMmpretrainsClippedEightBitNoise) {
  const std::vector<double> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  auto img = torch::full({3, 20, 24}, 5.0f);
  Rng rng(3);
  auto out = random_erasing(img, 1.0, rng, mean, std);
  auto erased = out.ne(5.0f);
  ASSERT_GT(erased.sum().item<int64_t>(), 0);
  // Back in 8-bit units every erased value is an integer in [0, 255], and some hit the clip.
  for (int64_t c = 0; c < 3; ++c) {
    auto v = out[c].masked_select(erased[c]) * std[c] + mean[c];
    auto px = v * 255.0;
    EXPECT_TRUE(all_close(px, px.round(), 0.0, 2e-3)) << "channel " << c;
    EXPECT_GE(px.min().item<double>(), -1e-3);
    EXPECT_LE(px.max().item<double>(), 255.0 + 1e-3);
  }
  Rng rng2(3);
  auto normal = random_erasing(img, 1.0, rng2);  // timm's N(0, 1): not on the 8-bit grid
  auto px = (normal[0].masked_select(normal[0].ne(5.0f)) * std[0] + mean[0]) * 255.0;
  EXPECT_FALSE(all_close(px, px.round(), 0.0, 2e-3));
}

TEST(Mix, PermutePartnerMixesEachImageWithAPermutationOfTheBatch) {
  AugmentConfig c;
  c.mixup_alpha = 0.8;
  c.mix_partner = "permute";
  const int64_t b = 6;
  auto images = torch::arange(b, torch::kFloat).view({b, 1, 1, 1}).expand({b, 3, 2, 2}).contiguous();
  auto labels = torch::arange(b, torch::kLong);
  int not_flip = 0;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    Rng rng(seed);
    auto r = mix_batch(images, labels, b, c, 0.0, rng);
    ASSERT_LT(r.lambda, 1.0);
    const double lam = r.lambda;
    std::vector<int64_t> partner;
    for (int64_t i = 0; i < b; ++i) {
      const double p = (r.images[i][0][0][0].item<double>() - lam * static_cast<double>(i)) / (1 - lam);
      partner.push_back(std::llround(p));
      EXPECT_NEAR(p, static_cast<double>(partner.back()), 1e-3);
      EXPECT_NEAR(r.targets[i][partner.back()].item<double>(), partner.back() == i ? 1.0 : 1 - lam, 1e-5);
    }
    auto sorted = partner;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, (std::vector<int64_t>{0, 1, 2, 3, 4, 5})) << "not a permutation";
    not_flip += partner != std::vector<int64_t>{5, 4, 3, 2, 1, 0};
  }
  EXPECT_GT(not_flip, 5);
}

}  // namespace
}  // namespace moejet::data
