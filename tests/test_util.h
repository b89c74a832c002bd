#pragma once
#include <unistd.h>
// Shared helpers for the gtest suites.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "moejet/core/error.h"
#include "moejet/core/json_util.h"
#include "moejet/models/vit_config.h"
#include "moejet/moe/moe_config.h"

namespace moejet::testing {

/// Fails with shape, max |diff| and the first offending index when `a` and `b` differ.
inline ::testing::AssertionResult all_close(const torch::Tensor& a, const torch::Tensor& b, double rtol = 1e-4,
                                            double atol = 1e-5) {
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure() << "shape mismatch: " << a.sizes() << " vs " << b.sizes();
  }
  auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  auto diff = (ad - bd).abs();
  auto tol = atol + rtol * bd.abs();
  auto bad = diff > tol;
  if (bad.any().item<bool>()) {
    auto idx = bad.flatten().nonzero()[0].item<int64_t>();
    return ::testing::AssertionFailure() << "max |diff| " << diff.max().item<double>() << " (shape " << a.sizes()
                                         << "), first bad flat index " << idx << ": "
                                         << ad.flatten()[idx].item<double>() << " vs "
                                         << bd.flatten()[idx].item<double>();
  }
  return ::testing::AssertionSuccess();
}

/// torch's intra-op thread count for one scope. The test runner sets one thread per process
/// (ctest runs processes side by side); kernels that split rows over those threads
/// (kernels/parallel.h) need two to run their parallel path in a test.
struct ScopedTorchThreads {
  explicit ScopedTorchThreads(int n) : previous(torch::get_num_threads()) {
    torch::set_num_threads(n);
  }
  ~ScopedTorchThreads() {
    torch::set_num_threads(previous);
  }
  ScopedTorchThreads(const ScopedTorchThreads&) = delete;
  ScopedTorchThreads& operator=(const ScopedTorchThreads&) = delete;
  int previous;
};

/// The records of a JSON-lines file (a run's metrics.jsonl), in order; none when it is missing.
inline std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    records.push_back(json::parse(line));
  }
  return records;
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

/// Passes when `fn` throws an E whose message contains every one of `fragments`; the message
/// comes with any failure.
template <class E>
::testing::AssertionResult throws_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& f : fragments) {
      if (what.find(f) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << f << "\": " << what;
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another type: " << e.what();
  }
  return ::testing::AssertionFailure() << "threw nothing";
}

/// A ViT small enough for a unit test: 8x8 one-channel images in 4x4 patches, width 16, 2 blocks
/// of 2 heads, 3 classes, MLP ratio 4 (64 hidden units), class token. Tests change what they need.
inline models::VitConfig tiny_vit() {
  models::VitConfig c;
  c.img_size = 8;
  c.patch_size = 4;
  c.in_chans = 1;
  c.num_classes = 3;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_ratio = 4.0;
  return c;
}

/// A model's "moe" section from JSON, read as a config file's is, e.g.
/// moe_config({{"type", "sphero"}, {"last", 2}, {"core_experts", 2}}).
inline moe::MoeConfig moe_config(const nlohmann::json& j) {
  return moe::moe_config_from_json(j, "model.moe");
}

inline std::string test_data_dir() {
  return MOEJET_TEST_DATA_DIR;
}
/// A reference fixture kept in the repository (tests/data/fixtures: timm's and the MoE Jetpack
/// authors' files, see its README), e.g. fixture_path("timm/vit_gap_custom/input.safetensors").
inline std::string fixture_path(const std::string& relative) {
  return test_data_dir() + "/fixtures/" + relative;
}

/// An op's output and its input's gradient for the upstream gradient g (cast to the output's
/// dtype), run on a fresh leaf copy of x0.
struct OutputAndGrad {
  torch::Tensor out, grad;
};
template <class Fn>
OutputAndGrad output_and_grad(const torch::Tensor& x0, const torch::Tensor& g, Fn fn) {
  auto x = x0.detach().clone().requires_grad_(true);
  auto out = fn(x);
  out.backward(g.to(out.scalar_type()));
  return {out.detach(), x.grad()};
}

}  // namespace moejet::testing
