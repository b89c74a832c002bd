// Batch loader. Each epoch starts its own worker threads; a worker claims the next batch number,
// builds the whole batch (get -> transform -> stack) and files it in a reorder buffer keyed by
// batch number, so next() hands batches out in order whatever the scheduling. Workers never run
// more than num_workers * prefetch batches ahead of the consumer. Every random choice derives from
// (seed, epoch, dataset index), so the output does not depend on the number of workers.

#include "moejet/data/loader.h"

#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::data {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t sample_seed(uint64_t seed, int64_t epoch, uint64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^ index);
}

std::vector<size_t> epoch_order(size_t size, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<size_t> order(size);
  for (size_t i = 0; i < size; ++i) {
    order[i] = i;
  }
  if (!shuffle || size < 2) {
    return order;
  }
  std::mt19937_64 gen(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  // Fisher-Yates with our own unbiased bounded draw: std::shuffle and
  // std::uniform_int_distribution are implementation-defined, and an epoch's order must not change
  // with the standard library.
  for (size_t i = size - 1; i > 0; --i) {
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do {
      r = gen();
    } while (r >= limit);
    std::swap(order[i], order[r % bound]);
  }
  return order;
}

struct Loader::Impl {
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  DatasetPtr dataset;
  Transform transform;
  LoaderOptions options;

  // Fixed while an epoch's workers run.
  bool started = false;
  int64_t epoch = 0;
  std::vector<size_t> order;
  int64_t num_batches = 0;

  // Consumer-side state.
  int64_t cursor = 0;
  std::exception_ptr failure;

  // Shared with the workers, guarded by `mu`.
  std::mutex mu;
  std::condition_variable work_cv, ready_cv;
  int64_t next_claim = 0;
  bool stop = false;
  std::map<int64_t, Slot> ready;
  std::vector<std::thread> workers;

  int64_t window() const {
    return static_cast<int64_t>(options.num_workers) * std::max(1, options.prefetch);
  }

  Batch make_batch(int64_t k) const {
    const auto n = static_cast<int64_t>(order.size());
    const int64_t global_begin = k * options.batch_size;
    const int64_t global_end = std::min(global_begin + options.batch_size, n);
    const int64_t per_shard = (global_end - global_begin + options.shards - 1) / options.shards;
    const int64_t begin = std::min(global_begin + options.shard * per_shard, global_end);
    const int64_t end = std::min(begin + per_shard, global_end);
    std::vector<torch::Tensor> images;
    std::vector<int64_t> labels;
    images.reserve(static_cast<size_t>(end - begin));
    labels.reserve(static_cast<size_t>(end - begin));
    for (int64_t pos = begin; pos < end; ++pos) {
      const size_t idx = order[static_cast<size_t>(pos)];
      Sample s = dataset->get(idx);
      Rng rng(sample_seed(options.seed, epoch, idx));
      torch::Tensor img = transform ? transform(s.image, rng) : s.image.to(torch::kFloat).div_(255.0);
      if (!images.empty() && img.sizes() != images.front().sizes()) {
        throw DataError(
            fmt::format("batch {}: sample {} transforms to [{}] but sample {} to [{}] (set image_size to "
                        "batch images of different sizes)",
                        k, idx, fmt::join(img.sizes(), ", "), order[static_cast<size_t>(begin)],
                        fmt::join(images.front().sizes(), ", ")));
      }
      images.push_back(std::move(img));
      labels.push_back(s.label);
    }
    Batch b;
    b.images = torch::stack(images);
    b.labels = torch::tensor(labels, torch::kLong);
    b.index = k;
    return b;
  }

  void worker_loop() {
    while (true) {
      int64_t k;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stop || next_claim >= num_batches || next_claim < cursor + window(); });
        if (stop || next_claim >= num_batches) {
          return;
        }
        k = next_claim++;
      }
      Slot slot;
      try {
        slot.batch = make_batch(k);
      } catch (...) {
        slot.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        ready.emplace(k, std::move(slot));
      }
      ready_cv.notify_all();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : workers) {
      t.join();
    }
    workers.clear();
    ready.clear();
  }

  void start(int64_t e, int64_t start_batch) {
    const auto n = static_cast<int64_t>(dataset->size());
    const int64_t batches =
        options.drop_last ? n / options.batch_size : (n + options.batch_size - 1) / options.batch_size;
    check<ConfigError>(start_batch >= 0 && start_batch <= batches,
                       "loader: start batch {} outside [0, {}] for epoch {} of {}", start_batch, batches, e,
                       dataset->describe());
    stop_workers();
    epoch = e;
    order = epoch_order(dataset->size(), options.seed, epoch, options.shuffle);
    num_batches = batches;
    cursor = start_batch;
    next_claim = start_batch;
    failure = nullptr;
    stop = false;
    started = true;
    const int64_t threads = std::min<int64_t>(options.num_workers, num_batches - start_batch);
    for (int64_t i = 0; i < threads; ++i) {
      workers.emplace_back([this] { worker_loop(); });
    }
  }

  bool next(Batch& out) {
    if (!started) {
      start(0, 0);
    }
    if (failure) {
      std::rethrow_exception(failure);
    }
    if (cursor >= num_batches) {
      return false;
    }
    if (options.num_workers == 0) {
      out = make_batch(cursor);
      ++cursor;
      return true;
    }
    Slot slot;
    {
      std::unique_lock<std::mutex> lock(mu);
      ready_cv.wait(lock, [&] { return ready.count(cursor) > 0; });
      auto it = ready.find(cursor);
      slot = std::move(it->second);
      ready.erase(it);
      ++cursor;
    }
    work_cv.notify_all();
    if (slot.error) {
      // The epoch cannot continue past a failed batch; later calls report the same error.
      failure = slot.error;
      stop_workers();
      std::rethrow_exception(failure);
    }
    out = std::move(slot.batch);
    return true;
  }
};

Loader::Loader(DatasetPtr dataset, Transform transform, LoaderOptions options) : impl_(std::make_unique<Impl>()) {
  check<ConfigError>(dataset != nullptr, "loader: data set is null");
  check<ConfigError>(options.batch_size > 0, "loader: batch_size must be > 0, got {}", options.batch_size);
  check<ConfigError>(options.shards >= 1 && options.shard >= 0 && options.shard < options.shards,
                     "loader: shard {} of {} is invalid", options.shard, options.shards);
  check<ConfigError>(options.batch_size % options.shards == 0,
                     "loader: the global batch {} does not split evenly over {} processes", options.batch_size,
                     options.shards);
  check<ConfigError>(options.num_workers >= 0, "loader: num_workers must be >= 0, got {}", options.num_workers);
  check<ConfigError>(options.prefetch >= 1, "loader: prefetch must be >= 1, got {}", options.prefetch);
  impl_->dataset = std::move(dataset);
  impl_->transform = std::move(transform);
  impl_->options = options;
}

Loader::~Loader() {
  impl_->stop_workers();
}

void Loader::start_epoch(int64_t epoch, int64_t start_batch) {
  impl_->start(epoch, start_batch);
}

bool Loader::next(Batch& batch) {
  return impl_->next(batch);
}

int64_t Loader::batches_per_epoch() const {
  const auto n = static_cast<int64_t>(impl_->dataset->size());
  const int64_t b = impl_->options.batch_size;
  return impl_->options.drop_last ? n / b : (n + b - 1) / b;
}

const Dataset& Loader::dataset() const {
  return *impl_->dataset;
}

}  // namespace moejet::data
