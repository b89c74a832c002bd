#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "moejet/core/error.h"
#include "moejet/data/dataset.h"
#include "moejet/data/loader.h"
#include "moejet/eval/predict.h"
#include "test_util.h"

namespace {

using namespace moejet;

// Image i is filled with value i; the "model" scores class c as (c - 1) * mean pixel, so the
// ranking flips with the image's value and the probabilities are known in closed form.
data::DatasetPtr valued_images(int64_t n) {
  auto images = torch::empty({n, 1, 2, 2}, torch::kByte);
  for (int64_t i = 0; i < n; ++i) {
    images[i].fill_(i);
  }
  return data::make_memory_dataset(images, std::vector<int64_t>(n, 0), {"a"}, "valued");
}

torch::Tensor scores(const torch::Tensor& x) {
  auto m = x.mean({1, 2, 3});
  return torch::stack({-m, torch::zeros_like(m), m, 0.5 * m}, 1);
}

TEST(Predict, TopKClassesAndProbabilitiesInTheLoadersOrderAcrossBatches) {
  data::LoaderOptions lo;
  lo.batch_size = 3;  // 7 images: the last batch is short
  lo.shuffle = false;
  lo.drop_last = false;
  lo.num_workers = 0;
  // Pixel values 0..6 reach the model unnormalised (mean 0, std 1/255 undoes the /255).
  data::AugmentConfig aug;
  aug.mean = {0.0};
  aug.std = {1.0 / 255.0};
  aug.image_size = 2;
  aug.crop_pct = 1.0;
  data::Loader loader(valued_images(7), data::make_eval_transform(aug, 1), lo);
  int routed = 0;
  const auto preds = eval::predict(scores, loader, 3, torch::kCPU, nullptr, [&]() {
    ++routed;
    return torch::tensor({{0.0, 1.0}, {1.0, 0.0}, {0.0, 1.0}}).narrow(0, 0, routed == 3 ? 1 : 3);
  });
  ASSERT_EQ(preds.size(), 7u);
  EXPECT_EQ(routed, 3);
  for (int64_t i = 0; i < 7; ++i) {
    const auto& p = preds[i];
    ASSERT_EQ(p.classes.size(), 3u);
    const auto ref = torch::softmax(scores(torch::full({1, 1, 2, 2}, static_cast<double>(i))), 1)[0];
    const auto [v, idx] = ref.topk(3);
    for (int j = 0; j < 3; ++j) {
      EXPECT_NEAR(p.probs[j], v[j].item<double>(), 1e-6) << i;
      if (i > 0) {  // image 0 ties every class
        EXPECT_EQ(p.classes[j], idx[j].item<int64_t>()) << i;
      }
    }
    if (i > 0) {
      EXPECT_EQ(p.classes[0], 2);  // m > 0.5 m > 0 > -m
      EXPECT_EQ(p.classes[1], 3);
    }
    EXPECT_EQ(p.expert, i % 3 == 1 ? 0 : 1) << i;
  }
  // k is clamped to the class count; k = 0 is refused.
  EXPECT_EQ(eval::predict(scores, loader, 10, torch::kCPU)[0].classes.size(), 4u);
  EXPECT_THROW(eval::predict(scores, loader, 0, torch::kCPU), ConfigError);
}

TEST(Predict, TableJsonLinesAndCsvNameClassesAndExperts) {
  eval::PredictionLabels labels;
  labels.class_names = {"T-shirt/top", "Trouser", "bag, small"};
  labels.superclass_members = {{0, 1}, {2}};
  const std::vector<std::string> files = {"a.png", "dir/b,c.png"};
  std::vector<eval::Prediction> preds(2);
  preds[0] = {{1, 0}, {0.75, 0.25}, 0};
  preds[1] = {{2, 1}, {0.5, 0.125}, 1};
  const auto jsonl = eval::format_predictions(files, preds, labels, "jsonl");
  std::istringstream in(jsonl);
  std::string line;
  std::vector<json> rows;
  while (std::getline(in, line)) {
    rows.push_back(json::parse(line));
  }
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["file"], "a.png");
  EXPECT_EQ(rows[0]["top"][0]["name"], "Trouser");
  EXPECT_DOUBLE_EQ(rows[0]["top"][1]["prob"].get<double>(), 0.25);
  EXPECT_EQ(rows[1]["expert"], 1);
  EXPECT_EQ(rows[0]["superclass"], (json{"T-shirt/top", "Trouser"}));

  const auto csv = eval::format_predictions(files, preds, labels, "csv");
  EXPECT_EQ(csv,
            "file,class_1,name_1,prob_1,class_2,name_2,prob_2,expert\n"
            "a.png,1,Trouser,0.750000,0,T-shirt/top,0.250000,0\n"
            "\"dir/b,c.png\",2,\"bag, small\",0.500000,1,Trouser,0.125000,1\n");

  const auto table = eval::format_predictions(files, preds, labels, "table");
  EXPECT_NE(table.find("Trouser      75.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("1 (bag, small)"), std::string::npos) << table;
  // Without names, classes are their indices; without a router, no expert column.
  preds[0].expert = preds[1].expert = -1;
  const auto bare = eval::format_predictions(files, preds, eval::PredictionLabels{}, "csv");
  EXPECT_EQ(bare.substr(0, bare.find('\n')), "file,class_1,name_1,prob_1,class_2,name_2,prob_2");
  EXPECT_NE(bare.find("a.png,1,1,0.750000"), std::string::npos) << bare;
  EXPECT_THROW(eval::format_predictions(files, preds, labels, "xml"), ConfigError);
}

TEST(Predict, ImageFilesFromFilesFoldersAndListsWithErrorsNamingTheLine) {
  namespace fs = std::filesystem;
  moejet::testing::TempDir dir;
  const std::string src = moejet::testing::test_data_dir() + "/cifar10_jpg/test";
  fs::copy(src, dir.file("imgs"), fs::copy_options::recursive);
  fs::create_directories(dir.file("lists"));
  { std::ofstream(dir.file("lists/some.txt")) << "# two images\n../imgs/dog/0003.jpg\n\n  ../imgs/cat/0000.jpg  \r\n"; }
  const auto files =
      data::collect_image_files({dir.file("imgs/airplane"), dir.file("lists/some.txt"), dir.file("imgs/dog/0000.jpg")});
  ASSERT_EQ(files.size(), 3u + 2u + 1u);
  EXPECT_TRUE(std::is_sorted(files.begin(), files.begin() + 3));
  EXPECT_EQ(fs::path(files[3]).lexically_normal(), fs::path(dir.file("imgs/dog/0003.jpg")).lexically_normal());
  EXPECT_EQ(fs::path(files[4]).filename(), "0000.jpg");
  EXPECT_EQ(files[5], dir.file("imgs/dog/0000.jpg"));
  auto images = data::open_image_files(files, 1);
  ASSERT_EQ(images->size(), 6u);
  EXPECT_EQ(images->get(0).image.sizes(), (torch::IntArrayRef{1, 32, 32}));
  EXPECT_EQ(images->get(0).label, -1);

  { std::ofstream(dir.file("lists/bad.txt")) << "../imgs/dog/0003.jpg\nmissing.jpg\n"; }
  EXPECT_TRUE(moejet::testing::throws_error<DataError>([&] { data::collect_image_files({dir.file("lists/bad.txt")}); },
                                                       {"bad.txt:2: "}));
  EXPECT_TRUE(moejet::testing::throws_error<DataError>([&] { data::collect_image_files({dir.file("nope")}); },
                                                       {"nope: no such file or folder"}));
  fs::create_directories(dir.file("empty"));
  EXPECT_TRUE(moejet::testing::throws_error<DataError>([&] { data::collect_image_files({dir.file("empty")}); },
                                                       {"folder has no images"}));
}

}  // namespace
