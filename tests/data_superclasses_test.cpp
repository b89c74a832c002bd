#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/superclasses.h"
#include "moejet/eval/evaluate.h"
#include "test_util.h"

using namespace moejet;
using moejet::testing::throws_error;

TEST(SuperClasses, ConfusionClusteringRecoversBlockDiagonalGroups) {
  // 12 classes in 4 confusable groups of 3, shuffled; a little noise everywhere.
  torch::manual_seed(0);
  auto perm = torch::randperm(12, torch::kLong);
  auto cm = torch::rand({12, 12}) * 2;
  for (int64_t i = 0; i < 12; ++i) {
    for (int64_t j = 0; j < 12; ++j) {
      if (i != j && perm[i].item<int64_t>() / 3 == perm[j].item<int64_t>() / 3)
        cm[i][j] += 40;
    }
    cm[i][i] += 500;
  }
  auto sc = data::superclasses_from_confusion(cm, 4);
  sc.validate("test", 12);
  for (int64_t i = 0; i < 12; ++i) {
    for (int64_t j = 0; j < 12; ++j) {
      const bool same_block = perm[i].item<int64_t>() / 3 == perm[j].item<int64_t>() / 3;
      EXPECT_EQ(sc.superclass_of[i] == sc.superclass_of[j], same_block) << i << " " << j;
    }
  }
}

TEST(SuperClasses, RandomDivisionIsBalancedAndSeeded) {
  auto a = data::random_superclasses(10, 3, 7);
  a.validate("random", 10);
  std::vector<int> size(3, 0);
  for (auto s : a.superclass_of)
    size[s]++;
  EXPECT_EQ(*std::max_element(size.begin(), size.end()) - *std::min_element(size.begin(), size.end()), 1);
  EXPECT_EQ(data::random_superclasses(10, 3, 7).superclass_of, a.superclass_of);
  auto m = a.matrix();
  EXPECT_TRUE(torch::equal(m.sum(1), torch::ones({10})));
  auto labels = torch::tensor({0, 9, 4}, torch::kLong);
  auto mapped = a.map(labels);
  EXPECT_EQ(mapped[1].item<int64_t>(), a.superclass_of[9]);
  // members(): each super-class's classes, ascending, every class once; to_json's groups are them.
  const auto members = a.members();
  ASSERT_EQ(members.size(), 3u);
  size_t total = 0;
  for (size_t s = 0; s < members.size(); ++s) {
    EXPECT_TRUE(std::is_sorted(members[s].begin(), members[s].end()));
    for (int64_t c : members[s]) {
      EXPECT_EQ(a.superclass_of[c], static_cast<int64_t>(s));
    }
    total += members[s].size();
    EXPECT_EQ(a.to_json()["groups"][s].size(), members[s].size());
  }
  EXPECT_EQ(total, 10u);
}

TEST(SuperClasses, BadFilesGetClearErrors) {
  moejet::testing::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.file(name)) << text;
    return dir.file(name);
  };
  auto expect_error = [](const std::string& path, int64_t classes, const std::string& needle) {
    EXPECT_TRUE(throws_error<ConfigError>([&] { data::read_superclasses(path, classes); }, {needle, path})) << path;
  };
  expect_error(write("count.json", R"({"num_superclasses": 2, "superclass_of": [0, 1, 0]})"), 10,
               "has 3 classes but the model/data set has 10");
  expect_error(write("range.json", R"({"num_superclasses": 2, "superclass_of": [0, 1, 2, 0]})"), 4,
               "class 2 has super-class 2, outside 0..1");
  expect_error(write("empty.json", R"({"num_superclasses": 3, "superclass_of": [0, 1, 0, 1]})"), 4,
               "super-class 2 has no classes");
  expect_error(write("typo.json", R"({"superclass": [0, 1]})"), 2, "superclass");
  auto ok = data::read_superclasses(write("ok.json", R"({"superclass_of": [1, 0, 1]})"), 3);
  EXPECT_EQ(ok.num_superclasses, 2);
}

TEST(SuperClasses, ReadsTheConfusionCsvThatEvalWrites) {
  moejet::testing::TempDir dir;
  auto cm = torch::tensor({{5, 1, 0}, {2, 7, 0}, {0, 0, 9}}, torch::kLong);
  eval::write_confusion_csv(dir.file("c.csv"), cm, {"T-shirt/top", "a,b", "c"});
  std::vector<std::string> names;
  auto back = data::read_confusion(dir.file("c.csv"), &names);
  EXPECT_TRUE(torch::equal(back.to(torch::kLong), cm));
  EXPECT_EQ(names, (std::vector<std::string>{"T-shirt/top", "a,b", "c"}));
  EXPECT_THROW(data::read_confusion(dir.file("missing.csv")), DataError);
  // A wrong type inside eval.json names the key, not just nlohmann's "type must be number".
  std::ofstream(dir.file("eval.json")) << R"({"confusion": [["x"]], "class_names": ["a"]})";
  EXPECT_TRUE(throws_error<DataError>([&] { data::read_confusion(dir.file("eval.json")); },
                                      {"eval.json: 'confusion' must be rows of numbers"}));
}
