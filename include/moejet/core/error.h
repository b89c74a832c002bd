#pragma once
// Error types of the library. Every error a user can cause (a bad file, a bad config key, a bad
// shape) is thrown as one of these with a message that names the file, key or shape at fault, so
// the CLI can print it as-is and exit non-zero. Bugs in moejet itself use TORCH_INTERNAL_ASSERT.

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace moejet {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A config file or flag is invalid: unknown key, wrong type, out-of-range value.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A checkpoint cannot be read or does not fit the model (missing keys, shapes).
class CheckpointError : public Error {
 public:
  using Error::Error;
};

/// A data file is missing, truncated or malformed.
class DataError : public Error {
 public:
  using Error::Error;
};

/// Throws `Err` with a fmt-formatted message when `cond` is false.
template <class Err, class... Args>
inline void check(bool cond, fmt::format_string<Args...> format, Args&&... args) {
  if (!cond) {
    throw Err(fmt::format(format, std::forward<Args>(args)...));
  }
}

}  // namespace moejet
