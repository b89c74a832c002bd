#pragma once
// File-system helpers. Everything moejet writes goes through write_atomic: the bytes land in a
// temporary file next to the target and are renamed over it only once complete, so an interrupted
// run never leaves a truncated checkpoint or report in place of a good one.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace moejet {

/// Calls `writer` on a stream to `path + ".tmp.<pid>"`, flushes, fsyncs and renames onto `path`.
/// Creates missing parent directories. On any failure the temporary file is removed and the old
/// `path` (if any) is untouched.
void write_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);

/// Makes `to` another name for the file `from` as it is now: a hard link, made under a temporary
/// name and renamed over `to` (no bytes written). Both are only ever replaced whole (write_atomic),
/// never changed in place, so a later write of either leaves the other as it was. Where the file
/// system has no hard links, the bytes are copied through write_atomic.
void link_atomic(const std::string& from, const std::string& to);

/// Reads a whole file; throws moejet::Error naming the file if it cannot be opened.
std::vector<char> read_file_bytes(const std::string& path);

/// The most a gzipped data file may inflate to unless its reader knows better (4 GiB).
constexpr uint64_t kMaxInflatedBytes = uint64_t{4} << 30;

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic. Gzip data
/// that would inflate to more than `max_bytes` is a DataError before the memory is spent.
std::vector<char> read_file_maybe_gzip(const std::string& path, uint64_t max_bytes = kMaxInflatedBytes);

/// The first `n` bytes of a file, gunzipped if it is gzip (fewer if the file is shorter): for
/// reading a header that says how large the whole file may be.
std::vector<char> read_head_maybe_gzip(const std::string& path, size_t n);

bool file_exists(const std::string& path);

}  // namespace moejet
