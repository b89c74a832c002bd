#include "moejet/core/fs.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "moejet/core/error.h"

namespace moejet {

namespace fs = std::filesystem;

namespace {

// Where write_atomic and link_atomic prepare `path` before renaming it into place.
std::string temporary_path(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

}  // namespace

void write_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
  }
  const std::string tmp = temporary_path(path);
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) {
        throw Error(fmt::format("{}: cannot open for writing: {}", tmp, std::strerror(errno)));
      }
      writer(out);
      out.flush();
      if (!out) {
        throw Error(fmt::format("{}: write failed (disk full?)", tmp));
      }
    }
    // fsync so that the rename never publishes a file whose bytes are still only in the cache.
    int fd = ::open(tmp.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      throw Error(fmt::format("{}: cannot rename into place: {}", path, std::strerror(errno)));
    }
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

void link_atomic(const std::string& from, const std::string& to) {
  const std::string tmp = temporary_path(to);
  std::remove(tmp.c_str());
  if (::link(from.c_str(), tmp.c_str()) == 0) {
    if (std::rename(tmp.c_str(), to.c_str()) != 0) {
      const int err = errno;
      std::remove(tmp.c_str());
      throw Error(fmt::format("{}: cannot rename into place: {}", to, std::strerror(err)));
    }
    return;
  }
  const auto bytes = read_file_bytes(from);
  write_atomic(to, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

namespace {

std::ifstream open_file(const std::string& path, std::ios::openmode mode) {
  std::error_code ec;
  // A directory opens as an ifstream on Linux and reports a size of 2^63: name it instead.
  if (fs::is_directory(path, ec)) {
    throw Error(fmt::format("{}: is a directory, not a file", path));
  }
  std::ifstream in(path, mode);
  if (!in) {
    throw Error(fmt::format("{}: cannot open file", path));
  }
  return in;
}

}  // namespace

std::vector<char> read_file_bytes(const std::string& path) {
  std::ifstream in = open_file(path, std::ios::binary | std::ios::ate);
  std::streamsize size = in.tellg();
  if (size < 0) {
    throw Error(fmt::format("{}: cannot tell the file's size (not a regular file?)", path));
  }
  in.seekg(0);
  std::vector<char> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(bytes.data(), size)) {
    throw Error(fmt::format("{}: read failed", path));
  }
  return bytes;
}

namespace {

bool is_gzip(const std::vector<char>& raw) {
  return raw.size() >= 2 && static_cast<unsigned char>(raw[0]) == 0x1f && static_cast<unsigned char>(raw[1]) == 0x8b;
}

// Inflates a gzip stream without ever holding more than `limit` bytes of output. With
// `head_only` the first `limit` bytes are returned; otherwise more than `limit` is an error, so
// that a small file cannot inflate into gigabytes (a gzip bomb) before its size is checked.
std::vector<char> gunzip(const std::string& path, std::vector<char> raw, uint64_t limit, bool head_only) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    throw Error(fmt::format("{}: zlib init failed", path));
  }
  auto too_big = [&]() {
    return DataError(fmt::format("{}: gzip data inflates to more than {} bytes, the most this file can hold{}", path,
                                 limit, limit == kMaxInflatedBytes ? "" : " by its own header"));
  };
  std::vector<char> out;
  out.resize(static_cast<size_t>(std::min<uint64_t>(raw.size() * 4 + 1024, limit + 1)));
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    if (zs.total_out >= out.size()) {
      if (zs.total_out > limit) {
        inflateEnd(&zs);
        if (head_only) {
          out.resize(static_cast<size_t>(limit));
          return out;
        }
        throw too_big();
      }
      out.resize(static_cast<size_t>(std::min<uint64_t>(out.size() * 2, limit + 1)));
    }
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = static_cast<uInt>(out.size() - zs.total_out);
    ret = inflate(&zs, Z_NO_FLUSH);
    if (ret == Z_STREAM_END) {
      break;
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) {
      inflateEnd(&zs);
      throw DataError(fmt::format("{}: corrupt gzip data ({})", path, zs.msg ? zs.msg : "?"));
    }
    if (ret == Z_BUF_ERROR && zs.avail_in == 0) {
      inflateEnd(&zs);
      if (head_only)
        break;
      throw DataError(fmt::format("{}: truncated gzip file", path));
    }
  }
  out.resize(std::min<uint64_t>(zs.total_out, head_only ? limit : zs.total_out));
  inflateEnd(&zs);
  if (!head_only && out.size() > limit) {
    throw too_big();
  }
  return out;
}

}  // namespace

std::vector<char> read_file_maybe_gzip(const std::string& path, uint64_t max_bytes) {
  std::vector<char> raw = read_file_bytes(path);
  return is_gzip(raw) ? gunzip(path, std::move(raw), max_bytes, false) : raw;
}

std::vector<char> read_head_maybe_gzip(const std::string& path, size_t n) {
  std::vector<char> head(std::max<size_t>(n, 2));
  {
    std::ifstream in = open_file(path, std::ios::binary);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
  }
  if (is_gzip(head)) {
    return gunzip(path, read_file_bytes(path), n, true);
  }
  head.resize(std::min(head.size(), n));
  return head;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

}  // namespace moejet
