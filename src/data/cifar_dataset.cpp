// CIFAR-10/100 binary version: fixed-size records of label byte(s) followed by a 32x32 image
// stored as three 1024-byte planes (R, G, B), each row-major, which is already [C, H, W].

#include <cstring>
#include <filesystem>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/text_lines.h"
#include "moejet/data/dataset.h"

namespace moejet::data {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarImageBytes = 3 * kCifarSide * kCifarSide;

/// `dir` itself, or the folder the official archive unpacks to when `dir` is its parent.
fs::path resolve_dir(const std::string& dir, const std::string& probe, const char* archive_dir) {
  if (fs::exists(fs::path(dir) / probe) || !fs::exists(fs::path(dir) / archive_dir / probe)) {
    return dir;
  }
  return fs::path(dir) / archive_dir;
}

DatasetPtr read_cifar(const fs::path& dir, const std::vector<std::string>& files, int64_t label_bytes,
                      int64_t num_classes, std::vector<std::string> names, const std::string& description) {
  const int64_t record = label_bytes + kCifarImageBytes;
  std::vector<std::vector<char>> contents;
  int64_t total = 0;
  for (const auto& name : files) {
    const std::string path = (dir / name).string();
    check<DataError>(file_exists(path), "{}: CIFAR batch file not found", path);
    // The largest batch file (CIFAR-100 train) is 50000 records: 154 MB.
    contents.push_back(read_file_maybe_gzip(path, uint64_t{60000} * static_cast<uint64_t>(record)));
    const auto size = static_cast<int64_t>(contents.back().size());
    check<DataError>(size > 0 && size % record == 0,
                     "{}: size {} bytes is not a whole number of {}-byte CIFAR records "
                     "(expected {} bytes for {} records; truncated?)",
                     path, size, record, (size / record + 1) * record, size / record + 1);
    total += size / record;
  }

  auto images = torch::empty({total, 3, kCifarSide, kCifarSide}, torch::kByte);
  auto* out = images.data_ptr<uint8_t>();
  std::vector<int64_t> labels;
  labels.reserve(static_cast<size_t>(total));
  for (size_t f = 0; f < contents.size(); ++f) {
    const auto& bytes = contents[f];
    const auto n = static_cast<int64_t>(bytes.size()) / record;
    for (int64_t i = 0; i < n; ++i) {
      const char* rec = bytes.data() + i * record;
      // CIFAR-100 records are <coarse, fine>; the fine label is the one classifiers use.
      const int64_t label = static_cast<unsigned char>(rec[label_bytes - 1]);
      check<DataError>(label < num_classes, "{}: record {} has label {}, expected < {}", (dir / files[f]).string(), i,
                       label, num_classes);
      labels.push_back(label);
      std::memcpy(out, rec + label_bytes, kCifarImageBytes);
      out += kCifarImageBytes;
    }
  }
  if (names.size() != static_cast<size_t>(num_classes)) {
    names.clear();
    for (int64_t k = 0; k < num_classes; ++k) {
      names.push_back(std::to_string(k));
    }
  }
  return make_memory_dataset(std::move(images), std::move(labels), std::move(names), description);
}

}  // namespace

DatasetPtr open_cifar10(const std::string& dir, bool train) {
  std::vector<std::string> files;
  if (train) {
    for (int b = 1; b <= 5; ++b) {
      files.push_back(fmt::format("data_batch_{}.bin", b));
    }
  } else {
    files = {"test_batch.bin"};
  }
  fs::path root = resolve_dir(dir, files[0], "cifar-10-batches-bin");
  std::vector<std::string> names = read_text_lines((root / "batches.meta.txt").string());
  if (names.size() != 10) {
    names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  }
  return read_cifar(root, files, 1, 10, std::move(names), fmt::format("cifar10 {}", train ? "train" : "test"));
}

DatasetPtr open_cifar100(const std::string& dir, bool train) {
  std::vector<std::string> files = {train ? "train.bin" : "test.bin"};
  fs::path root = resolve_dir(dir, files[0], "cifar-100-binary");
  return read_cifar(root, files, 2, 100, read_text_lines((root / "fine_label_names.txt").string()),
                    fmt::format("cifar100 {}", train ? "train" : "test"));
}

}  // namespace moejet::data
