// STL-10 binary version: <split>_X.bin holds 96x96x3 images, each channel stored column-major
// (Matlab order), so the raw layout is [N, C, W, H]; <split>_y.bin holds labels 1..10.

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

constexpr int64_t kStl10Side = 96;
constexpr int64_t kStl10ImageBytes = 3 * kStl10Side * kStl10Side;
constexpr int64_t kClasses = 10;

// Read with a cap: 1 MiB of labels (the labelled splits hold at most 8000), and then exactly the
// pixels those labels need, so a gzip bomb cannot inflate past them.
std::vector<char> read_required(const std::string& path, uint64_t max_bytes) {
  check<DataError>(file_exists(path), "{}: STL-10 file not found", path);
  return read_file_maybe_gzip(path, max_bytes);
}

}  // namespace

DatasetPtr open_stl10(const std::string& dir, bool train) {
  fs::path root = dir;
  const std::string split = train ? "train" : "test";
  if (!fs::exists(root / (split + "_X.bin")) && fs::exists(root / "stl10_binary")) {
    root /= "stl10_binary";
  }
  const std::string x_path = (root / (split + "_X.bin")).string();
  const std::string y_path = (root / (split + "_y.bin")).string();
  std::vector<char> y = read_required(y_path, 1u << 20);
  const auto n = static_cast<int64_t>(y.size());
  check<DataError>(n > 0, "{}: no labels", y_path);
  std::vector<char> x = read_required(x_path, static_cast<uint64_t>(y.size()) * kStl10ImageBytes);
  const int64_t expected = n * kStl10ImageBytes;
  check<DataError>(static_cast<int64_t>(x.size()) == expected,
                   "{}: expected {} bytes ({} images of 96x96x3 for the {} labels in {}), got {}", x_path, expected, n,
                   n, y_path, x.size());

  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t raw = static_cast<unsigned char>(y[i]);
    check<DataError>(raw >= 1 && raw <= kClasses, "{}: label {} of sample {} outside 1..{}", y_path, raw, i, kClasses);
    labels[i] = raw - 1;
  }

  auto raw = torch::empty({n, 3, kStl10Side, kStl10Side}, torch::kByte);
  std::memcpy(raw.data_ptr<uint8_t>(), x.data(), static_cast<size_t>(expected));
  x = {};
  auto images = raw.transpose(2, 3).contiguous();

  std::vector<std::string> names = read_text_lines((root / "class_names.txt").string());
  if (names.size() != kClasses) {
    names = {"airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"};
  }
  return make_memory_dataset(std::move(images), std::move(labels), std::move(names), "stl10 " + split);
}

}  // namespace moejet::data
