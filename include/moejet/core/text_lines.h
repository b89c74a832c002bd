#pragma once
// Name lists in plain text files (class names of CIFAR and STL-10): one name a line, as the data
// sets' own files write them, with Windows line ends and trailing spaces, and blank lines at the end.

#include <string>
#include <vector>

namespace moejet {

/// The non-empty lines of a text file, trailing spaces and carriage returns removed; none when the
/// file cannot be read (callers fall back to their own names).
std::vector<std::string> read_text_lines(const std::string& path);

}  // namespace moejet
