// Loader: coverage and order of epochs, reproducibility, exact mid-epoch resume, equivalence of
// threaded and synchronous loading, and worker errors surfacing in next().

#include <atomic>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/data/loader.h"
#include "test_util.h"

namespace moejet::data {
namespace {

/// N images [1, 1, 2] whose two pixels encode the sample index (hi byte, lo byte).
DatasetPtr indexed_dataset(int64_t n) {
  auto idx = torch::arange(n, torch::kLong);
  auto images = torch::stack({idx.div(256, "floor"), idx.remainder(256)}, 1).to(torch::kByte).view({n, 1, 1, 2});
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 7;
  }
  std::vector<std::string> names = {"0", "1", "2", "3", "4", "5", "6"};
  return make_memory_dataset(images, labels, names, "indexed");
}

/// Sample indices of a batch made without a transform (pixels / 255).
std::vector<int64_t> decode(const Batch& b) {
  auto px = (b.images * 255).round().to(torch::kLong).view({-1, 2});
  std::vector<int64_t> out;
  for (int64_t i = 0; i < px.size(0); ++i) {
    out.push_back(px[i][0].item<int64_t>() * 256 + px[i][1].item<int64_t>());
  }
  return out;
}

std::vector<int64_t> epoch_indices(Loader& loader, int64_t epoch, int64_t start = 0) {
  loader.start_epoch(epoch, start);
  std::vector<int64_t> all;
  Batch b;
  while (loader.next(b)) {
    auto ids = decode(b);
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(b.labels[static_cast<int64_t>(i)].item<int64_t>(), ids[i] % 7);
    }
    all.insert(all.end(), ids.begin(), ids.end());
  }
  return all;
}

std::vector<Batch> epoch_batches(Loader& loader, int64_t epoch, int64_t start = 0) {
  loader.start_epoch(epoch, start);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) {
    out.push_back(b);
  }
  return out;
}

TEST(Loader, EveryIndexOncePerEpoch) {
  for (int workers : {0, 3}) {
    LoaderOptions o;
    o.batch_size = 10;
    o.drop_last = false;
    o.num_workers = workers;
    o.seed = 5;
    Loader loader(indexed_dataset(103), nullptr, o);
    EXPECT_EQ(loader.batches_per_epoch(), 11);
    auto ids = epoch_indices(loader, 0);
    ASSERT_EQ(ids.size(), 103u);
    EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 103u);
    EXPECT_EQ(*std::min_element(ids.begin(), ids.end()), 0);
    EXPECT_EQ(*std::max_element(ids.begin(), ids.end()), 102);
    std::vector<int64_t> sorted_ids = ids;
    std::sort(sorted_ids.begin(), sorted_ids.end());
    EXPECT_NE(ids, sorted_ids) << "shuffle had no effect";

    auto batches = epoch_batches(loader, 0);
    ASSERT_EQ(batches.size(), 11u);
    EXPECT_EQ(batches.back().images.size(0), 3);
    EXPECT_EQ(batches.back().index, 10);
    EXPECT_EQ(batches.front().images.sizes(), (std::vector<int64_t>{10, 1, 1, 2}));
    EXPECT_EQ(batches.front().labels.scalar_type(), torch::kLong);
  }
}

TEST(Loader, DropLastAndNoShuffle) {
  LoaderOptions o;
  o.batch_size = 10;
  o.drop_last = true;
  o.shuffle = false;
  o.num_workers = 2;
  Loader loader(indexed_dataset(103), nullptr, o);
  EXPECT_EQ(loader.batches_per_epoch(), 10);
  auto ids = epoch_indices(loader, 3);
  ASSERT_EQ(ids.size(), 100u);
  for (int64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(ids[i], i);
  }
}

TEST(Loader, OrderReproducibleAndVariesAcrossEpochs) {
  LoaderOptions o;
  o.batch_size = 16;
  o.num_workers = 2;
  o.seed = 42;
  auto ds = indexed_dataset(64);
  Loader a(ds, nullptr, o), b(ds, nullptr, o);
  auto e1 = epoch_indices(a, 1);
  EXPECT_EQ(e1, epoch_indices(b, 1));
  EXPECT_NE(e1, epoch_indices(a, 2));
  EXPECT_EQ(e1, epoch_indices(a, 1));
  o.seed = 43;
  Loader c(ds, nullptr, o);
  EXPECT_NE(e1, epoch_indices(c, 1));
  // The documented permutation.
  auto order = epoch_order(64, 42, 1, true);
  EXPECT_EQ(std::vector<int64_t>(order.begin(), order.end()), e1);
}

/// Random 3x10x10 images with the full train pipeline, so batches depend on per-sample seeds.
std::pair<DatasetPtr, Transform> augmented_setup() {
  auto gen = at::detail::createCPUGenerator(11);
  auto images = torch::randint(0, 256, {37, 3, 10, 10}, gen, torch::kByte);
  std::vector<int64_t> labels(37);
  for (int i = 0; i < 37; ++i) {
    labels[i] = i % 3;
  }
  auto ds = make_memory_dataset(images, labels, {"a", "b", "c"}, "random");
  AugmentConfig c;
  c.random_crop_padding = 2;
  c.hflip = 0.5;
  c.randaugment = "rand-m9-n2-mstd0.5";
  c.random_erasing = 0.25;
  return {ds, make_train_transform(c, 3)};
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels)) << "batch " << i;
  }
}

TEST(Loader, ThreadedEqualsSynchronous) {
  auto [ds, transform] = augmented_setup();
  LoaderOptions o;
  o.batch_size = 5;
  o.drop_last = false;
  o.seed = 9;
  o.num_workers = 0;
  Loader sync(ds, transform, o);
  o.num_workers = 3;
  o.prefetch = 1;
  Loader threaded(ds, transform, o);
  auto a = epoch_batches(sync, 2);
  ASSERT_EQ(a.size(), 8u);
  expect_same_batches(a, epoch_batches(threaded, 2));
  // Augmentations differ between epochs.
  auto other = epoch_batches(sync, 3);
  EXPECT_FALSE(torch::equal(a[0].images, other[0].images));
}

TEST(Loader, StartEpochSkipsToAnExactBatch) {
  auto [ds, transform] = augmented_setup();
  LoaderOptions o;
  o.batch_size = 4;
  o.drop_last = true;
  o.seed = 1;
  o.num_workers = 2;
  Loader loader(ds, transform, o);
  auto full = epoch_batches(loader, 4);
  ASSERT_EQ(full.size(), 9u);
  auto resumed = epoch_batches(loader, 4, 6);
  ASSERT_EQ(resumed.size(), 3u);
  expect_same_batches(std::vector<Batch>(full.begin() + 6, full.end()), resumed);
  EXPECT_TRUE(epoch_batches(loader, 4, 9).empty());
  EXPECT_THROW(loader.start_epoch(4, 10), ConfigError);
  // Restarting mid-epoch (the previous epoch's workers still running) is fine too.
  loader.start_epoch(5);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  auto again = epoch_batches(loader, 4, 8);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(torch::equal(again[0].images, full[8].images));
}

class ThrowingDataset final : public Dataset {
 public:
  explicit ThrowingDataset(size_t bad) : bad_(bad) {}
  size_t size() const override {
    return 50;
  }
  Sample get(size_t index) const override {
    if (index == bad_) {
      throw DataError("sample " + std::to_string(index) + " is corrupt");
    }
    return {torch::zeros({1, 2, 2}, torch::kByte), 0};
  }
  int64_t num_classes() const override {
    return 1;
  }
  int64_t channels() const override {
    return 1;
  }
  std::string describe() const override {
    return "throwing";
  }

 private:
  size_t bad_;
};

TEST(Loader, WorkerErrorsAreRethrownNotHung) {
  for (int workers : {0, 1, 4}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.num_workers = workers;
    o.shuffle = false;
    Loader loader(std::make_shared<ThrowingDataset>(21), nullptr, o);
    loader.start_epoch(0);
    Batch b;
    int good = 0;
    EXPECT_TRUE(moejet::testing::throws_error<DataError>(
        [&] {
          while (loader.next(b)) {
            ++good;
          }
        },
        {"sample 21"}))
        << workers << " workers";
    EXPECT_EQ(good, 5) << "batches before the bad one (indices 0..19)";
    if (workers > 0) {
      EXPECT_THROW(loader.next(b), DataError);
    }
    // A new epoch from a batch past the bad sample works again.
    loader.start_epoch(0, 6);
    int after = 0;
    while (loader.next(b)) {
      ++after;
    }
    EXPECT_EQ(after, 6);
  }
}

TEST(Loader, DestructionMidEpochJoins) {
  std::atomic<int> calls{0};
  auto ds = indexed_dataset(1000);
  Transform slow = [&calls](const torch::Tensor& img, Rng&) {
    ++calls;
    return img.to(torch::kFloat);
  };
  LoaderOptions o;
  o.batch_size = 8;
  o.num_workers = 3;
  o.prefetch = 2;
  {
    Loader loader(ds, slow, o);
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
  }
  // Bounded prefetch: at most the consumed batch plus num_workers * prefetch batches in flight.
  EXPECT_LE(calls.load(), 8 * (1 + 3 * 2 + 3));
  EXPECT_THROW(Loader(ds, nullptr, LoaderOptions{0}), ConfigError);
}

TEST(Loader, SampleSeedsAreWellMixed) {
  std::set<uint64_t> seen;
  for (int64_t e = 0; e < 4; ++e) {
    for (uint64_t i = 0; i < 256; ++i) {
      seen.insert(sample_seed(0, e, i));
    }
  }
  EXPECT_EQ(seen.size(), 1024u);
  EXPECT_NE(sample_seed(1, 0, 0), sample_seed(0, 1, 0));
  EXPECT_NE(sample_seed(0, 0, 1), sample_seed(0, 1, 0));
}

}  // namespace
}  // namespace moejet::data
