// IDX reader (the MNIST family's format): a big-endian header {0, 0, type, ndims} followed by
// ndims big-endian uint32 sizes and the raw data. Only unsigned-byte data (type 0x08) occurs in
// the data sets moejet reads.

#include <cstring>
#include <filesystem>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/data/dataset.h"

namespace moejet::data {

namespace {

uint32_t read_be32(const std::vector<char>& bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + offset);
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

struct IdxFile {
  std::vector<char> bytes;
  std::vector<int64_t> dims;
  size_t data_offset = 0;
};

IdxFile read_idx(const std::string& path, uint32_t ndims, const char* what) {
  check<DataError>(file_exists(path), "{}: IDX {} file not found", path, what);
  IdxFile f;
  const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  const char* size_note = gz ? " (after gunzip)" : "";
  // The header first: it says how many bytes the whole file may inflate to.
  f.data_offset = 4 + 4 * size_t(ndims);
  f.bytes = read_head_maybe_gzip(path, f.data_offset);
  check<DataError>(f.bytes.size() >= 4, "{}: too short for an IDX header ({} bytes{})", path, f.bytes.size(),
                   size_note);
  const uint32_t magic = read_be32(f.bytes, 0);
  const uint32_t expected_magic = 0x00000800u | ndims;
  check<DataError>(magic == expected_magic, "{}: bad IDX magic 0x{:08x} for {} (expected 0x{:08x}: uint8, {} dims)",
                   path, magic, what, expected_magic, ndims);
  check<DataError>(f.bytes.size() >= f.data_offset, "{}: truncated IDX header: expected at least {} bytes, got {}{}",
                   path, f.data_offset, f.bytes.size(), size_note);
  size_t count = 1;
  for (uint32_t d = 0; d < ndims; ++d) {
    f.dims.push_back(read_be32(f.bytes, 4 + 4 * d));
    // Three 32-bit dims can overflow 64 bits; no real IDX file holds over 2^40 bytes.
    check<DataError>(f.dims.back() == 0 || count <= (uint64_t{1} << 40) / static_cast<uint64_t>(f.dims.back()),
                     "{}: IDX header declares dims [{}...], over 2^40 bytes of data", path, fmt::join(f.dims, ", "));
    count *= static_cast<size_t>(f.dims.back());
  }
  f.bytes = read_file_maybe_gzip(path, f.data_offset + count);
  const size_t expected = f.data_offset + count;
  check<DataError>(f.bytes.size() == expected, "{}: IDX {} file of dims [{}] should be {} bytes, got {}{}{}", path,
                   what, fmt::join(f.dims, ", "), expected, f.bytes.size(), size_note,
                   f.bytes.size() < expected ? " (truncated)" : " (trailing bytes)");
  return f;
}

}  // namespace

DatasetPtr open_idx(const std::string& images_path, const std::string& labels_path,
                    std::vector<std::string> class_names, const std::string& description) {
  IdxFile images = read_idx(images_path, 3, "images");
  IdxFile labels = read_idx(labels_path, 1, "labels");
  const int64_t n = images.dims[0], h = images.dims[1], w = images.dims[2];
  check<DataError>(labels.dims[0] == n, "{}: {} labels, but {} has {} images", labels_path, labels.dims[0], images_path,
                   n);
  check<DataError>(h > 0 && w > 0, "{}: empty images ({}x{})", images_path, h, w);

  std::vector<int64_t> label_values(static_cast<size_t>(n));
  int64_t max_label = -1;
  for (int64_t i = 0; i < n; ++i) {
    label_values[i] = static_cast<unsigned char>(labels.bytes[labels.data_offset + i]);
    max_label = std::max(max_label, label_values[i]);
  }
  if (class_names.empty()) {
    for (int64_t k = 0; k <= max_label; ++k) {
      class_names.push_back(std::to_string(k));
    }
  }
  check<DataError>(max_label < static_cast<int64_t>(class_names.size()), "{}: label {} out of range for {} classes",
                   labels_path, max_label, class_names.size());

  auto tensor = torch::empty({n, 1, h, w}, torch::kByte);
  std::memcpy(tensor.data_ptr<uint8_t>(), images.bytes.data() + images.data_offset, static_cast<size_t>(n * h * w));
  images.bytes = {};
  std::string desc = description.empty() ? std::filesystem::path(images_path).filename().string() : description;
  return make_memory_dataset(std::move(tensor), std::move(label_values), std::move(class_names), std::move(desc));
}

DatasetPtr open_idx(const std::string& images_path, const std::string& labels_path,
                    std::vector<std::string> class_names) {
  return open_idx(images_path, labels_path, std::move(class_names), "");
}

}  // namespace moejet::data
