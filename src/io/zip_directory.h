#pragma once
// The central directory of a zip archive, read before libtorch's reader touches the archive.
// libtorch's PyTorchStreamReader allocates whatever size a record declares, so a 1 MB archive
// whose directory claims gigabytes costs gigabytes before any check runs. Reading the directory
// first lets moejet refuse such records, naming them, with no allocation beyond the directory.

#include <cstdint>
#include <string>
#include <unordered_map>

namespace moejet::io {

struct ZipRecord {
  uint16_t method = 0;  ///< 0 stored (what torch.save writes), 8 deflated
  uint64_t compressed = 0;
  uint64_t size = 0;  ///< uncompressed size, as the directory declares it
};

/// Records by name without the archive's top folder ("data.pkl", "data/0"), or an empty map
/// when the directory cannot be found (libtorch's reader then gives its own error). Throws
/// CheckpointError naming the file and record when a record declares more bytes than the
/// archive can hold: its file size if stored, 1032x its compressed size if deflated (deflate's
/// maximum ratio).
std::unordered_map<std::string, ZipRecord> read_zip_directory(const std::string& path);

}  // namespace moejet::io
