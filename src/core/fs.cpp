#include "moejet/core/fs.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "moejet/core/error.h"

namespace moejet {

namespace fs = std::filesystem;

void write_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
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

std::vector<char> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    throw Error(fmt::format("{}: cannot open file", path));
  }
  std::streamsize size = in.tellg();
  in.seekg(0);
  std::vector<char> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(bytes.data(), size)) {
    throw Error(fmt::format("{}: read failed", path));
  }
  return bytes;
}

std::vector<char> read_file_maybe_gzip(const std::string& path) {
  std::vector<char> raw = read_file_bytes(path);
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f ||
      static_cast<unsigned char>(raw[1]) != 0x8b) {
    return raw;
  }
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    throw Error(fmt::format("{}: zlib init failed", path));
  }
  std::vector<char> out;
  out.resize(raw.size() * 4 + 1024);
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    if (zs.total_out >= out.size()) {
      out.resize(out.size() * 2);
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
      throw DataError(fmt::format("{}: truncated gzip file", path));
    }
  }
  out.resize(zs.total_out);
  inflateEnd(&zs);
  return out;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

}  // namespace moejet
