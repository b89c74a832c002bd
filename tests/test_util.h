#pragma once
#include <unistd.h>
// Shared helpers for the gtest suites.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <cstdlib>
#include <string>

namespace moejet::testing {

/// Fails with shape, max |diff| and the first offending index when `a` and `b` differ.
inline ::testing::AssertionResult all_close(
    const torch::Tensor& a, const torch::Tensor& b, double rtol = 1e-4, double atol = 1e-5) {
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure()
           << "shape mismatch: " << a.sizes() << " vs " << b.sizes();
  }
  auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  auto diff = (ad - bd).abs();
  auto tol = atol + rtol * bd.abs();
  auto bad = diff > tol;
  if (bad.any().item<bool>()) {
    auto idx = bad.flatten().nonzero()[0].item<int64_t>();
    return ::testing::AssertionFailure()
           << "max |diff| " << diff.max().item<double>() << " (shape " << a.sizes()
           << "), first bad flat index " << idx << ": " << ad.flatten()[idx].item<double>()
           << " vs " << bd.flatten()[idx].item<double>();
  }
  return ::testing::AssertionSuccess();
}

/// A fresh temporary directory removed when the object goes out of scope.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    auto base = std::filesystem::temp_directory_path();
    for (int i = 0;; ++i) {
      path = base / ("moejet_test_" + std::to_string(::getpid()) + "_" + std::to_string(i));
      if (std::filesystem::create_directory(path)) {
        break;
      }
    }
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const {
    return (path / name).string();
  }
};

inline std::string test_data_dir() {
  return MOEJET_TEST_DATA_DIR;
}
/// A reference fixture kept in the repository (tests/data/fixtures: timm's and the MoE Jetpack
/// authors' files, see its README), e.g. fixture_path("timm/vit_gap_custom/input.safetensors").
inline std::string fixture_path(const std::string& relative) {
  return test_data_dir() + "/fixtures/" + relative;
}

}  // namespace moejet::testing
