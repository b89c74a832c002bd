#pragma once
// A multi-threaded, prefetching batch loader. Worker threads each assemble whole batches (read,
// transform, stack) while the trainer computes; batches come out in order. Shuffling and
// augmentation are seeded from (seed, epoch), so every epoch is reproducible and resume can skip
// straight to a given batch.

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "moejet/data/augment.h"
#include "moejet/data/dataset.h"

namespace moejet::data {

struct Batch {
  torch::Tensor images;  ///< float [B, C, H, W]
  torch::Tensor labels;  ///< int64 [B]
  int64_t index = 0;     ///< batch number within the epoch
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = true;
  int num_workers = 2;  ///< 0 = load on the calling thread
  int prefetch = 4;     ///< batches in flight per worker
  uint64_t seed = 0;
  /// Data-parallel sharding: `batch_size` is the global batch, and shard r of `shards` yields
  /// its r-th contiguous slice of every batch (batch_size must divide evenly). Every shard sees
  /// the same order and sample seeds, so N shards together load exactly the 1-shard batches.
  int shard = 0;
  int shards = 1;
};

/// Seed of the augmentation generator for dataset sample `index` in `epoch` (splitmix64-mixed, so
/// nearby indices and epochs get unrelated streams).
uint64_t sample_seed(uint64_t seed, int64_t epoch, uint64_t index);

/// The order in which an epoch visits the data set: a Fisher-Yates permutation drawn from
/// std::mt19937_64(seed * 1000003 + epoch) when `shuffle`, else 0..size-1.
std::vector<size_t> epoch_order(size_t size, uint64_t seed, int64_t epoch, bool shuffle);

class Loader {
 public:
  Loader(DatasetPtr dataset, Transform transform, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts an epoch (fixes the shuffle order and sample seeds); `start_batch` skips the first
  /// batches without loading them (exact resume mid-epoch).
  void start_epoch(int64_t epoch, int64_t start_batch = 0);
  /// Next batch of the current epoch; false at the end. Worker exceptions are rethrown here.
  bool next(Batch& batch);
  int64_t batches_per_epoch() const;
  const Dataset& dataset() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moejet::data
