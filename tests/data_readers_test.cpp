// Data set readers: IDX (plain and gzipped), CIFAR-10/100, STL-10, image folders (PNM and the
// shared CIFAR JPEGs), the real Fashion-MNIST package, spec resolution, subsets.

#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/dataset.h"
#include "test_util.h"

namespace moejet::data {
namespace {

namespace fs = std::filesystem;
using moejet::testing::TempDir;
using moejet::testing::throws_error;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

void push_be32(std::vector<uint8_t>& v, uint32_t x) {
  v.push_back(static_cast<uint8_t>(x >> 24));
  v.push_back(static_cast<uint8_t>(x >> 16));
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}

std::vector<uint8_t> idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::vector<uint8_t> v;
  push_be32(v, 0x803);
  push_be32(v, n);
  push_be32(v, h);
  push_be32(v, w);
  for (uint32_t i = 0; i < n * h * w; ++i) {
    v.push_back(static_cast<uint8_t>((i * 37 + 11) % 256));
  }
  return v;
}

std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> v;
  push_be32(v, 0x801);
  push_be32(v, static_cast<uint32_t>(labels.size()));
  v.insert(v.end(), labels.begin(), labels.end());
  return v;
}

void check_idx_content(const DatasetPtr& ds) {
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->channels(), 1);
  EXPECT_EQ(ds->num_classes(), 5);  // max label 4 + 1
  EXPECT_EQ(ds->labels(), (std::vector<int64_t>{4, 0, 2}));
  for (size_t i = 0; i < 3; ++i) {
    Sample s = ds->get(i);
    ASSERT_EQ(s.image.sizes(), (std::vector<int64_t>{1, 2, 3}));
    ASSERT_EQ(s.image.scalar_type(), torch::kByte);
    for (int64_t y = 0; y < 2; ++y) {
      for (int64_t x = 0; x < 3; ++x) {
        const int64_t flat = static_cast<int64_t>(i) * 6 + y * 3 + x;
        EXPECT_EQ(s.image[0][y][x].item<int64_t>(), (flat * 37 + 11) % 256);
      }
    }
  }
  EXPECT_EQ(ds->get(0).label, 4);
}

TEST(IdxReader, PlainAndGzippedGiveExactPixelsAndLabels) {
  TempDir tmp;
  write_bytes(tmp.file("img"), idx_images(3, 2, 3));
  write_bytes(tmp.file("lbl"), idx_labels({4, 0, 2}));
  check_idx_content(open_idx(tmp.file("img"), tmp.file("lbl")));

  write_gzip(tmp.file("img.gz"), idx_images(3, 2, 3));
  write_gzip(tmp.file("lbl.gz"), idx_labels({4, 0, 2}));
  check_idx_content(open_idx(tmp.file("img.gz"), tmp.file("lbl.gz")));
}

TEST(IdxReader, GetReturnsAnIndependentCopy) {
  TempDir tmp;
  write_bytes(tmp.file("img"), idx_images(3, 2, 3));
  write_bytes(tmp.file("lbl"), idx_labels({4, 0, 2}));
  auto ds = open_idx(tmp.file("img"), tmp.file("lbl"));
  auto a = ds->get(1).image;
  auto before = a.clone();
  a.fill_(0);
  EXPECT_TRUE(torch::equal(ds->get(1).image, before));
}

TEST(IdxReader, ErrorsNameTheFile) {
  TempDir tmp;
  write_bytes(tmp.file("lbl"), idx_labels({1, 2, 3}));

  auto bad_magic = idx_images(3, 2, 3);
  bad_magic[3] = 0x02;
  write_bytes(tmp.file("magic"), bad_magic);
  EXPECT_TRUE(
      throws_error<DataError>([&] { open_idx(tmp.file("magic"), tmp.file("lbl")); }, {tmp.file("magic"), "magic"}));

  auto truncated = idx_images(3, 2, 3);
  truncated.resize(truncated.size() - 5);
  write_bytes(tmp.file("trunc"), truncated);
  // 16 header bytes + 18 pixels expected, 29 present.
  EXPECT_TRUE(throws_error<DataError>([&] { open_idx(tmp.file("trunc"), tmp.file("lbl")); },
                                      {tmp.file("trunc"), "34", "29", "truncated"}));

  write_gzip(tmp.file("trunc.gz"), truncated);
  EXPECT_TRUE(throws_error<DataError>([&] { open_idx(tmp.file("trunc.gz"), tmp.file("lbl")); },
                                      {tmp.file("trunc.gz"), "34", "29", "gunzip"}));

  write_bytes(tmp.file("img"), idx_images(3, 2, 3));
  write_bytes(tmp.file("lbl4"), idx_labels({1, 2, 3, 0}));
  EXPECT_TRUE(throws_error<DataError>([&] { open_idx(tmp.file("img"), tmp.file("lbl4")); },
                                      {tmp.file("lbl4"), "4 labels", "3 images"}));

  EXPECT_TRUE(
      throws_error<DataError>([&] { open_idx(tmp.file("nope"), tmp.file("lbl")); }, {tmp.file("nope"), "not found"}));

  // Labels beyond the named classes.
  EXPECT_TRUE(throws_error<DataError>(
      [&] {
        open_idx(tmp.file("img"), tmp.file("lbl"), {"a", "b"});
      },
      {tmp.file("lbl"), "3"}));
}

void write_fake_mnist(const std::string& dir) {
  write_gzip(dir + "/train-images-idx3-ubyte.gz", idx_images(4, 2, 2));
  write_gzip(dir + "/train-labels-idx1-ubyte.gz", idx_labels({9, 8, 7, 6}));
  write_bytes(dir + "/t10k-images-idx3-ubyte", idx_images(2, 2, 2));
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_labels({1, 0}));
}

TEST(OpenDataset, DataDirEnvironmentOverride) {
  TempDir tmp;
  fs::create_directories(tmp.path / "fashion-mnist");
  write_fake_mnist((tmp.path / "fashion-mnist").string());
  ::setenv("MOEJET_DATA_DIR", tmp.path.c_str(), 1);
  auto train = open_dataset("fashion-mnist", "train");
  auto test = open_dataset("fashion-mnist", "test");
  ::unsetenv("MOEJET_DATA_DIR");
  EXPECT_EQ(train->size(), 4u);
  EXPECT_EQ(test->size(), 2u);
  EXPECT_EQ(train->labels(), (std::vector<int64_t>{9, 8, 7, 6}));
  EXPECT_EQ(train->class_names().at(9), "Ankle boot");
  EXPECT_NE(train->describe().find("fashion-mnist train"), std::string::npos) << train->describe();

  // The same files through explicit-directory specs.
  EXPECT_EQ(open_dataset("idx:" + (tmp.path / "fashion-mnist").string(), "test")->size(), 2u);
  EXPECT_EQ(open_dataset("mnist:" + (tmp.path / "fashion-mnist").string(), "train")->size(), 4u);
}

TEST(OpenDataset, RejectsUnknownSpecsAndSplits) {
  EXPECT_TRUE(
      throws_error<ConfigError>([&] { open_dataset("imagenet", "train"); }, {"cifar10:<dir>", "fashion-mnist"}));
  EXPECT_THROW(open_dataset("fashion-mnist", "validation"), ConfigError);
  EXPECT_THROW(open_dataset("tfds:/x", "train"), ConfigError);
  EXPECT_THROW(open_dataset("cifar10:", "train"), ConfigError);
  TempDir tmp;
  EXPECT_THROW(open_dataset("cifar10:" + tmp.file("missing"), "train"), DataError);
}

TEST(FashionMnist, DebianPackage) {
  const char* dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  ::unsetenv("MOEJET_DATA_DIR");
  auto train = open_dataset("fashion-mnist", "train");
  auto test = open_dataset("fashion-mnist", "test");
  ASSERT_EQ(train->size(), 60000u);
  ASSERT_EQ(test->size(), 10000u);
  EXPECT_EQ(train->num_classes(), 10);
  EXPECT_EQ(train->channels(), 1);
  EXPECT_EQ(train->get(0).image.sizes(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(test->get(9999).image.sizes(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(train->class_names(), (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}));
  std::map<int64_t, int> train_hist, test_hist;
  for (int64_t l : train->labels()) {
    ++train_hist[l];
  }
  for (int64_t l : test->labels()) {
    ++test_hist[l];
  }
  ASSERT_EQ(train_hist.size(), 10u);
  for (const auto& [label, count] : train_hist) {
    EXPECT_EQ(count, 6000) << "class " << label;
  }
  for (const auto& [label, count] : test_hist) {
    EXPECT_EQ(count, 1000) << "class " << label;
  }
  // The first training image is an ankle boot (label 9) with a black border.
  EXPECT_EQ(train->get(0).label, 9);
  EXPECT_EQ(train->get(0).image[0][0][0].item<int64_t>(), 0);
  EXPECT_GT(train->get(0).image.max().item<int64_t>(), 200);
}

// --- CIFAR ----------------------------------------------------------------------------------

uint8_t cifar_byte(int record, int j) {
  return static_cast<uint8_t>((record * 131 + j * 7 + (j / 1024) * 50) % 256);
}

std::vector<uint8_t> cifar_records(int first, int count, int label_bytes, int num_classes) {
  std::vector<uint8_t> v;
  for (int r = first; r < first + count; ++r) {
    if (label_bytes == 2) {
      v.push_back(static_cast<uint8_t>(r % 20));  // coarse
    }
    v.push_back(static_cast<uint8_t>((r * 3) % num_classes));
    for (int j = 0; j < 3072; ++j) {
      v.push_back(cifar_byte(r, j));
    }
  }
  return v;
}

void check_cifar_record(const DatasetPtr& ds, size_t i, int record, int num_classes) {
  Sample s = ds->get(i);
  ASSERT_EQ(s.image.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(s.label, (record * 3) % num_classes);
  // Planes R, G, B, each row-major.
  for (int c = 0; c < 3; ++c) {
    for (int y : {0, 5, 31}) {
      for (int x : {0, 17, 31}) {
        EXPECT_EQ(s.image[c][y][x].item<int64_t>(), cifar_byte(record, c * 1024 + y * 32 + x))
            << "record " << record << " c" << c << " y" << y << " x" << x;
      }
    }
  }
}

TEST(CifarReader, Cifar10PixelLayoutAndLabels) {
  TempDir tmp;
  const auto dir = tmp.path / "cifar-10-batches-bin";
  for (int b = 1; b <= 5; ++b) {
    write_bytes((dir / fmt::format("data_batch_{}.bin", b)).string(), cifar_records((b - 1) * 3, 3, 1, 10));
  }
  write_bytes((dir / "test_batch.bin").string(), cifar_records(100, 2, 1, 10));
  write_bytes((dir / "batches.meta.txt").string(), {'a',  '\n', 'b',  '\n', 'c',  '\n', 'd',  '\n', 'e',  '\n', 'f',
                                                    '\n', 'g',  '\n', 'h',  '\n', 'i',  '\n', 'j',  '\n', '\n'});
  // The parent of the archive's folder is accepted too.
  auto train = open_dataset("cifar10:" + tmp.path.string(), "train");
  auto test = open_cifar10(dir.string(), false);
  ASSERT_EQ(train->size(), 15u);
  ASSERT_EQ(test->size(), 2u);
  EXPECT_EQ(train->class_names().at(9), "j");
  for (int r : {0, 4, 14}) {
    check_cifar_record(train, static_cast<size_t>(r), r, 10);
  }
  check_cifar_record(test, 1, 101, 10);
}

TEST(CifarReader, Cifar100UsesFineLabels) {
  TempDir tmp;
  write_bytes(tmp.file("train.bin"), cifar_records(0, 4, 2, 100));
  write_bytes(tmp.file("test.bin"), cifar_records(40, 3, 2, 100));
  auto train = open_cifar100(tmp.path.string(), true);
  auto test = open_dataset("cifar100:" + tmp.path.string(), "test");
  ASSERT_EQ(train->size(), 4u);
  ASSERT_EQ(test->size(), 3u);
  EXPECT_EQ(train->num_classes(), 100);
  for (int r = 0; r < 4; ++r) {
    check_cifar_record(train, static_cast<size_t>(r), r, 100);
  }
  check_cifar_record(test, 2, 42, 100);
  EXPECT_EQ(test->labels(), (std::vector<int64_t>{20, 23, 26}));
}

TEST(CifarReader, TruncatedAndBadLabels) {
  TempDir tmp;
  auto bytes = cifar_records(0, 2, 1, 10);
  bytes.pop_back();
  write_bytes(tmp.file("test_batch.bin"), bytes);
  EXPECT_TRUE(throws_error<DataError>([&] { open_cifar10(tmp.path.string(), false); },
                                      {tmp.file("test_batch.bin"), "6145", "6146"}));

  bytes = cifar_records(0, 2, 1, 10);
  bytes[3073] = 10;  // second record's label
  write_bytes(tmp.file("test_batch.bin"), bytes);
  EXPECT_TRUE(throws_error<DataError>([&] { open_cifar10(tmp.path.string(), false); },
                                      {tmp.file("test_batch.bin"), "label 10"}));

  EXPECT_TRUE(throws_error<DataError>([&] { open_cifar10(tmp.path.string(), true); },
                                      {tmp.file("data_batch_1.bin"), "not found"}));
}

// --- STL-10 ---------------------------------------------------------------------------------

TEST(Stl10Reader, ColumnMajorImagesAndOneBasedLabels) {
  TempDir tmp;
  const int64_t side = 96, plane = side * side, image = 3 * plane;
  std::vector<uint8_t> x(static_cast<size_t>(2 * image), 0);
  // Raw layout [N, C, W, H]: offset n*image + c*plane + col*96 + row.
  auto raw_at = [&](int64_t n, int64_t c, int64_t row, int64_t col) -> uint8_t& {
    return x[static_cast<size_t>(n * image + c * plane + col * side + row)];
  };
  raw_at(0, 0, 3, 70) = 200;  // row 3, col 70 of the R plane
  raw_at(1, 2, 90, 1) = 77;   // row 90, col 1 of the B plane
  write_bytes(tmp.file("train_X.bin"), x);
  write_bytes(tmp.file("train_y.bin"), {1, 10});
  auto ds = open_stl10(tmp.path.string(), true);
  ASSERT_EQ(ds->size(), 2u);
  EXPECT_EQ(ds->labels(), (std::vector<int64_t>{0, 9}));
  auto a = ds->get(0).image, b = ds->get(1).image;
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{3, 96, 96}));
  EXPECT_EQ(a[0][3][70].item<int64_t>(), 200);
  EXPECT_EQ(a[0][70][3].item<int64_t>(), 0);
  EXPECT_EQ(a.sum().item<int64_t>(), 200);
  EXPECT_EQ(b[2][90][1].item<int64_t>(), 77);
  EXPECT_EQ(b.sum().item<int64_t>(), 77);
  EXPECT_EQ(ds->class_names().at(2), "car");

  write_bytes(tmp.file("test_X.bin"), x);
  write_bytes(tmp.file("test_y.bin"), {0, 3});
  EXPECT_TRUE(
      throws_error<DataError>([&] { open_stl10(tmp.path.string(), false); }, {tmp.file("test_y.bin"), "label 0"}));
  write_bytes(tmp.file("test_y.bin"), {1, 2, 3});
  EXPECT_TRUE(throws_error<DataError>([&] { open_dataset("stl10:" + tmp.path.string(), "test"); },
                                      {tmp.file("test_X.bin"), std::to_string(3 * image), std::to_string(2 * image)}));
}

// --- image folders --------------------------------------------------------------------------

void write_pgm(const std::string& path, int w, int h, uint8_t base) {
  std::vector<uint8_t> v;
  std::string header = fmt::format("P5\n{} {}\n255\n", w, h);
  v.assign(header.begin(), header.end());
  for (int i = 0; i < w * h; ++i) {
    v.push_back(static_cast<uint8_t>(base + i));
  }
  write_bytes(path, v);
}

void write_ppm(const std::string& path, int w, int h, uint8_t base) {
  std::vector<uint8_t> v;
  std::string header = fmt::format("P6\n{} {}\n255\n", w, h);
  v.assign(header.begin(), header.end());
  for (int i = 0; i < w * h; ++i) {
    for (int c = 0; c < 3; ++c) {
      v.push_back(static_cast<uint8_t>(base + i * 3 + c));
    }
  }
  write_bytes(path, v);
}

TEST(ImageFolder, SortedClassesFilesAndExactPixels) {
  TempDir tmp;
  write_pgm(tmp.file("zebra/b.pgm"), 3, 2, 100);
  write_pgm(tmp.file("zebra/a.pgm"), 3, 2, 10);
  write_pgm(tmp.file("apple/x.pgm"), 3, 2, 50);
  write_bytes(tmp.file("apple/notes.txt"), {'h', 'i'});
  fs::create_directories(tmp.path / "mango");
  write_pgm(tmp.file("mango/deep/y.pgm"), 3, 2, 0);
  write_pgm(tmp.file("mango/z.pgm"), 3, 2, 1);
  write_bytes(tmp.file("stray.pgm"), {0});  // files at the root are not a class

  auto ds = open_image_folder(tmp.path.string());
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"apple", "mango", "zebra"}));
  EXPECT_EQ(ds->channels(), 1);
  ASSERT_EQ(ds->size(), 5u);
  EXPECT_EQ(ds->labels(), (std::vector<int64_t>{0, 1, 1, 2, 2}));
  // torchvision order: a folder's own files before its sub-folders'.
  EXPECT_EQ(ds->get(1).image[0][0][0].item<int64_t>(), 1);  // mango/z.pgm
  EXPECT_EQ(ds->get(2).image[0][0][0].item<int64_t>(), 0);  // mango/deep/y.pgm
  auto a = ds->get(3).image;                                // zebra/a.pgm
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(a[0][1][2].item<int64_t>(), 10 + 5);
  EXPECT_EQ(ds->get(4).image[0][0][1].item<int64_t>(), 101);  // zebra/b.pgm

  // Forcing three channels replicates the grey plane.
  auto rgb = open_image_folder(tmp.path.string(), 3);
  auto x = rgb->get(3).image;
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{3, 2, 3}));
  EXPECT_TRUE(torch::equal(x[0], a[0]));
  EXPECT_TRUE(torch::equal(x[2], a[0]));
}

TEST(ImageFolder, RgbChannelOrderAndGreyForcing) {
  TempDir tmp;
  write_ppm(tmp.file("c/p.ppm"), 2, 2, 0);
  auto ds = open_image_folder(tmp.path.string());
  EXPECT_EQ(ds->channels(), 3);
  auto img = ds->get(0).image;
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 2, 2}));
  // Pixel (y=1, x=0) is the third pixel: R, G, B = 6, 7, 8.
  EXPECT_EQ(img[0][1][0].item<int64_t>(), 6);
  EXPECT_EQ(img[1][1][0].item<int64_t>(), 7);
  EXPECT_EQ(img[2][1][0].item<int64_t>(), 8);
  auto grey = open_image_folder(tmp.path.string(), 1)->get(0).image;
  EXPECT_EQ(grey.sizes(), (std::vector<int64_t>{1, 2, 2}));
}

TEST(ImageFolder, Errors) {
  TempDir tmp;
  EXPECT_TRUE(throws_error<DataError>([&] { open_image_folder(tmp.file("missing")); }, {tmp.file("missing")}));
  fs::create_directories(tmp.path / "empty_root");
  EXPECT_TRUE(throws_error<DataError>([&] { open_image_folder(tmp.file("empty_root")); },
                                      {tmp.file("empty_root"), "no class"}));
  fs::create_directories(tmp.path / "root/cls_a");
  write_pgm(tmp.file("root/cls_b/1.pgm"), 2, 2, 0);
  EXPECT_TRUE(
      throws_error<DataError>([&] { open_image_folder(tmp.file("root")); }, {tmp.file("root/cls_a"), "no images"}));
  write_pgm(tmp.file("root/cls_a/0.pgm"), 2, 2, 0);
  write_bytes(tmp.file("root/cls_a/1.jpg"), {'n', 'o', 't', ' ', 'a', ' ', 'j', 'p', 'g'});
  auto ds = open_image_folder(tmp.file("root"));
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_NO_THROW(ds->get(0));
  EXPECT_TRUE(throws_error<DataError>([&] { ds->get(1); }, {tmp.file("root/cls_a/1.jpg"), "decode"}));
  EXPECT_THROW(open_image_folder(tmp.file("root"), 2), ConfigError);
}

TEST(ImageFolder, CifarJpegs) {
  // 23 CIFAR-10 test images kept in the repository (tests/data/cifar10_jpg, from ../shared/data).
  const std::string root = moejet::testing::test_data_dir() + "/cifar10_jpg";
  auto ds = open_dataset("folder:" + root, "test");
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"airplane", "cat", "dog"}));
  EXPECT_EQ(ds->channels(), 3);
  ASSERT_EQ(ds->size(), 23u);
  std::map<int64_t, int> hist;
  for (int64_t l : ds->labels()) {
    ++hist[l];
  }
  EXPECT_EQ(hist, (std::map<int64_t, int>{{0, 3}, {1, 10}, {2, 10}}));
  for (size_t i : {size_t(0), size_t(12), size_t(22)}) {
    auto img = ds->get(i).image;
    ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 32, 32}));
    EXPECT_EQ(img.scalar_type(), torch::kByte);
    EXPECT_GT(img.to(torch::kFloat).std().item<double>(), 1.0);  // a real picture, not flat
  }
}

TEST(ImageFolder, AFolderWithoutAHeldOutSplitIsAnErrorNotTheTrainingImages) {
  // The CIFAR JPEGs laid out three ways: flat DIR/<class>/, DIR/train/ alone, DIR/train + DIR/val.
  const std::string src = moejet::testing::test_data_dir() + "/cifar10_jpg/test";
  TempDir tmp;
  for (const auto& layout : {"flat", "train_only/train", "with_val/train", "with_val/val"}) {
    fs::create_directories(tmp.file(layout));
    fs::copy(src, tmp.file(layout), fs::copy_options::recursive);
  }
  // Training images are found in every layout.
  EXPECT_EQ(open_dataset("folder:" + tmp.file("flat"), "train")->size(), 23u);
  EXPECT_EQ(open_dataset("folder:" + tmp.file("train_only"), "train")->size(), 23u);
  // Evaluating: only a real held-out folder will do; val/ stands in for test/.
  EXPECT_EQ(open_dataset("folder:" + tmp.file("with_val"), "test")->size(), 23u);
  for (const auto& dir : {"flat", "train_only"}) {
    EXPECT_TRUE(throws_error<DataError>([&] { open_dataset(std::string("folder:") + tmp.file(dir), "test"); },
                                        {"no 'test' split", "data.val_split"}));
  }
}

// --- subsets --------------------------------------------------------------------------------

DatasetPtr tiny_memory_dataset() {
  auto images = torch::arange(6, torch::kByte).view({6, 1, 1, 1});
  return make_memory_dataset(images, {0, 1, 2, 0, 1, 2}, {"a", "b", "c"}, "tiny");
}

TEST(Subsets, SubsetAndFilterClasses) {
  auto base = tiny_memory_dataset();
  auto sub = subset(base, {5, 0, 3}, "held out");
  ASSERT_EQ(sub->size(), 3u);
  EXPECT_EQ(sub->labels(), (std::vector<int64_t>{2, 0, 0}));
  EXPECT_EQ(sub->get(0).image.item<int64_t>(), 5);
  EXPECT_EQ(sub->num_classes(), 3);
  EXPECT_THROW(subset(base, {6}, "bad"), DataError);

  auto f = filter_classes(base, {2, 0});
  ASSERT_EQ(f->size(), 4u);
  EXPECT_EQ(f->num_classes(), 2);
  EXPECT_EQ(f->class_names(), (std::vector<std::string>{"c", "a"}));
  EXPECT_EQ(f->labels(), (std::vector<int64_t>{1, 0, 1, 0}));
  EXPECT_EQ(f->get(1).image.item<int64_t>(), 2);
  EXPECT_EQ(f->get(1).label, 0);
  EXPECT_THROW(filter_classes(base, {3}), ConfigError);
  EXPECT_THROW(filter_classes(base, {1, 1}), ConfigError);

  EXPECT_THROW(make_memory_dataset(torch::zeros({2, 1, 1, 1}, torch::kByte), {0, 5}, {"a"}, "x"), DataError);
}

TEST(ImageFolder, AHeaderClaimingAHugeImageIsRefusedBeforeDecoding) {
  TempDir tmp;
  write_pgm(tmp.file("root/a/0.pgm"), 2, 2, 0);
  // A 17-byte JPEG (SOI, SOF0: 8-bit, 20000 x 20000, one component) and a PNG whose IHDR says
  // 12000 x 12000 RGB: 400 MB and 432 MB to decode.
  write_bytes(tmp.file("root/a/big.jpg"),
              {0xff, 0xd8, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0x4e, 0x20, 0x4e, 0x20, 0x01, 0x01, 0x11, 0x00, 0xff, 0xd9});
  write_bytes(tmp.file("root/b/big.png"),
              {0x89, 'P',  'N',  'G',  0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 'I',  'H',  'D',  'R', 0x00,
               0x00, 0x2e, 0xe0, 0x00, 0x00, 0x2e, 0xe0, 0x08, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
  auto ds = open_image_folder(tmp.file("root"));
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_NO_THROW(ds->get(0));
  EXPECT_TRUE(throws_error<DataError>(
      [&] { ds->get(1); },
      {"big.jpg", "20000x20000 image (400000000 pixels) is over the 89478485-pixel limit", "data.max_image_pixels"}));
  EXPECT_TRUE(throws_error<DataError>([&] { ds->get(2); }, {"big.png", "12000x12000 image (144000000 pixels)"}));
  // The limit comes from the data config through open_dataset.
  EXPECT_TRUE(throws_error<DataError>([&] { open_dataset("folder:" + tmp.file("root"), "train", 3); },
                                      {"0.pgm", "2x2 image (4 pixels) is over the 3-pixel limit;"}));
}

TEST(IdxReader, AGzipBombIsRefusedAtTheSizeItsHeaderDeclares) {
  TempDir tmp;
  // A valid header for 3 images of 2x3 pixels, followed by 64 MB of zeros (64 kB gzipped).
  auto bomb = idx_images(3, 2, 3);
  bomb.resize(bomb.size() + (64u << 20), 0);
  write_gzip(tmp.file("img.gz"), bomb);
  write_bytes(tmp.file("lbl"), idx_labels({1, 2, 3}));
  EXPECT_LT(fs::file_size(tmp.file("img.gz")), 1u << 20);
  EXPECT_TRUE(throws_error<DataError>([&] { open_idx(tmp.file("img.gz"), tmp.file("lbl")); },
                                      {tmp.file("img.gz"), "inflates to more than 34 bytes", "by its own header"}));
  // A data file replaced by a directory: named, not std::bad_alloc.
  fs::create_directories(tmp.path / "dir");
  EXPECT_TRUE(
      throws_error<moejet::Error>([&] { open_idx(tmp.file("dir"), tmp.file("lbl")); }, {"is a directory, not a file"}));
}

}  // namespace
}  // namespace moejet::data
