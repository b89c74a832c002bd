#include "zip_directory.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "moejet/core/error.h"

namespace moejet::io {

namespace {

uint64_t le(const std::vector<unsigned char>& b, size_t at, int n) {
  uint64_t v = 0;
  for (int k = n; k-- > 0;)
    v = (v << 8) | b[at + static_cast<size_t>(k)];
  return v;
}

bool read_at(std::ifstream& in, uint64_t offset, size_t n, std::vector<unsigned char>* out) {
  out->resize(n);
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  return static_cast<bool>(in.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(n)));
}

}  // namespace

std::unordered_map<std::string, ZipRecord> read_zip_directory(const std::string& path) {
  std::unordered_map<std::string, ZipRecord> records;
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in)
    return records;
  const auto file_size = static_cast<uint64_t>(in.tellg());
  // The end-of-central-directory record: 22 bytes plus a comment of up to 64 KiB, at the end.
  const uint64_t tail = std::min<uint64_t>(file_size, 22 + 65535);
  std::vector<unsigned char> b;
  if (tail < 22 || !read_at(in, file_size - tail, tail, &b))
    return records;
  size_t eocd = std::string::npos;
  for (size_t k = tail - 22 + 1; k-- > 0;) {
    if (le(b, k, 4) == 0x06054b50) {
      eocd = k;
      break;
    }
  }
  if (eocd == std::string::npos)
    return records;
  uint64_t entries = le(b, eocd + 10, 2), dir_size = le(b, eocd + 12, 4), dir_offset = le(b, eocd + 16, 4);
  if ((entries == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) && eocd >= 20 &&
      le(b, eocd - 20, 4) == 0x07064b50) {  // zip64: the locator points at the zip64 record
    const uint64_t at = le(b, eocd - 20 + 8, 8);
    std::vector<unsigned char> z;
    if (at + 56 > file_size || !read_at(in, at, 56, &z) || le(z, 0, 4) != 0x06064b50)
      return records;
    entries = le(z, 32, 8);
    dir_size = le(z, 40, 8);
    dir_offset = le(z, 48, 8);
  }
  if (dir_offset > file_size || dir_size > file_size - dir_offset || !read_at(in, dir_offset, dir_size, &b)) {
    return records;
  }
  size_t at = 0;
  for (uint64_t e = 0; e < entries && at + 46 <= b.size() && le(b, at, 4) == 0x02014b50; ++e) {
    ZipRecord r;
    r.method = static_cast<uint16_t>(le(b, at + 10, 2));
    r.compressed = le(b, at + 20, 4);
    r.size = le(b, at + 24, 4);
    const size_t name_len = le(b, at + 28, 2), extra_len = le(b, at + 30, 2), comment_len = le(b, at + 32, 2);
    if (at + 46 + name_len + extra_len > b.size())
      break;
    std::string name(reinterpret_cast<const char*>(b.data() + at + 46), name_len);
    // zip64 sizes live in the extra field 0x0001, in this order, for each 32-bit field at 0xffffffff.
    for (size_t x = at + 46 + name_len; x + 4 <= at + 46 + name_len + extra_len;) {
      const size_t id = le(b, x, 2), len = le(b, x + 2, 2);
      if (id == 0x0001) {
        size_t f = x + 4;
        if (r.size == 0xffffffff && f + 8 <= x + 4 + len) {
          r.size = le(b, f, 8);
          f += 8;
        }
        if (r.compressed == 0xffffffff && f + 8 <= x + 4 + len)
          r.compressed = le(b, f, 8);
      }
      x += 4 + len;
    }
    const bool stored = r.method == 0;
    const uint64_t limit = stored ? file_size : std::min<uint64_t>(r.compressed, file_size) * 1032 + 65536;
    if (r.size > limit) {
      throw CheckpointError(
          fmt::format("{}: zip record '{}' declares {} bytes, more than this {}-byte archive can hold{} (a zip "
                      "bomb or a corrupt archive)",
                      path, name, r.size, file_size, stored ? "" : " even deflated"));
    }
    const size_t slash = name.find('/');
    records[slash == std::string::npos ? name : name.substr(slash + 1)] = r;
    at += 46 + name_len + extra_len + comment_len;
  }
  return records;
}

}  // namespace moejet::io
