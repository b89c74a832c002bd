#pragma once
// File-system helpers. Everything moejet writes goes through write_atomic: the bytes land in a
// temporary file next to the target and are renamed over it only once complete, so an interrupted
// run never leaves a truncated checkpoint or report in place of a good one.

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace moejet {

/// Calls `writer` on a stream to `path + ".tmp.<pid>"`, flushes, fsyncs and renames onto `path`.
/// Creates missing parent directories. On any failure the temporary file is removed and the old
/// `path` (if any) is untouched.
void write_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);

/// Reads a whole file; throws moejet::Error naming the file if it cannot be opened.
std::vector<char> read_file_bytes(const std::string& path);

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic.
std::vector<char> read_file_maybe_gzip(const std::string& path);

bool file_exists(const std::string& path);

}  // namespace moejet
