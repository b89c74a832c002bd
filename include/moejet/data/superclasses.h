#pragma once
// Super-classes for Mobile V-MoE's router supervision: a map from each of K classes to one of E
// groups (one per expert). They come from a file, from a dense model's confusion matrix (the
// paper: classes the model confuses belong together; the symmetrised confusion graph is split into
// E balanced groups with METIS), or at random (balanced; the paper's "random super-classes"
// baseline). The file is JSON:
//   {"num_superclasses": 5, "superclass_of": [0, 3, 0, ...],           // one id per class
//    "class_names": ["T-shirt/top", ...], "groups": [["T-shirt/top", "Shirt"], ...]}
// Only the first two keys are needed; the names make it readable.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/core/json_util.h"

namespace moejet::data {

struct SuperClasses {
  int64_t num_superclasses = 0;
  std::vector<int64_t> superclass_of;    ///< [K]
  std::vector<std::string> class_names;  ///< optional, [K]

  int64_t num_classes() const {
    return static_cast<int64_t>(superclass_of.size());
  }
  /// [K, E] one-hot float matrix: soft class targets [B, K] x this = super-class targets.
  torch::Tensor matrix() const;
  /// Super-class label of each class label ([B] int64, any device).
  torch::Tensor map(const torch::Tensor& labels) const;
  /// The classes of each super-class, ascending: [E] lists of class ids.
  std::vector<std::vector<int64_t>> members() const;
  /// Throws ConfigError naming `source` for ids out of range, empty groups, or a class count
  /// other than `expected_classes` (when > 0).
  void validate(const std::string& source, int64_t expected_classes = 0) const;
  json to_json() const;
};

SuperClasses superclasses_from_json(const json& j, const std::string& source);
SuperClasses read_superclasses(const std::string& path, int64_t expected_classes = 0);

/// Balanced random division of K classes into E groups (sizes differ by at most one).
SuperClasses random_superclasses(int64_t num_classes, int64_t num_superclasses, uint64_t seed);

/// Groups classes that a model confuses: METIS on the graph with edge weights C[i][j] + C[j][i]
/// (off-diagonal, each row first normalised to rates so that large classes do not dominate).
SuperClasses superclasses_from_confusion(const torch::Tensor& confusion, int64_t num_superclasses, uint64_t seed = 0);

/// Reads a confusion matrix written by `moejet eval --out` (confusion.csv, or eval.json's
/// "confusion"); class names come along when the file has them.
torch::Tensor read_confusion(const std::string& path, std::vector<std::string>* class_names = nullptr);

}  // namespace moejet::data
