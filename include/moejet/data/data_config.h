#pragma once
// Which images a run reads: the "data" section of a training config (the data set, its splits,
// a class selection, a range of the training split, a held-out part, a stratified limit), and the
// functions that open a split as it describes. Training, evaluation and recycling's statistics
// all open their images through open_split, so that they agree on which images are which.

#include <cstdint>
#include <string>
#include <vector>

#include "moejet/core/config_fields.h"
#include "moejet/data/dataset.h"

namespace moejet::data {

struct DataConfig {
  std::string dataset = "fashion-mnist";  ///< spec for data::open_dataset
  std::string train_split = "train";
  std::string eval_split = "test";
  /// Keep only these classes (relabelled 0..K-1 in this order); empty = all.
  std::vector<int64_t> classes;
  /// Use at most this many training images (a seeded, class-stratified subset); 0 = all.
  int64_t train_limit = 0;
  /// Evaluate on at most this many images: a class-stratified subset drawn with kEvalSubsetSeed,
  /// not train.seed, so that every run of every seed, and `moejet eval --limit`, score the same
  /// images; 0 = all.
  int64_t eval_limit = 0;
  /// Only images [start, end) of the training split (before class filtering and the limit):
  /// disjoint parts of one data set for upstream pre-training and downstream fine-tuning.
  std::vector<int64_t> train_range;
  /// Hold out this fraction of the training split (after range and classes; seeded, stratified,
  /// the same images every time) as the eval split, for data sets with no held-out split of their
  /// own; 0 = use eval_split.
  double val_split = 0.0;
  int num_workers = 2;
  /// Image files whose header claims more pixels are refused before decoding (PIL's
  /// MAX_IMAGE_PIXELS); 0 = no limit.
  int64_t max_image_pixels = kDefaultMaxImagePixels;
  MOEJET_CONFIG_FIELDS(dataset, train_split, eval_split, classes, train_limit, eval_limit, train_range, val_split,
                       num_workers, max_image_pixels)

  /// Throws ConfigError naming the key of a value out of range.
  void validate() const;
};

/// The seed of data.eval_limit's subset (and of `moejet eval --limit`'s): fixed, as the held-out
/// part of val_split is. Seeds differ in how a model trains, not in what it is scored on.
inline constexpr uint64_t kEvalSubsetSeed = 0;

/// One split of the configured data set with the range, class filter, held-out part and a
/// seeded, class-stratified limit applied.
DatasetPtr open_split(const DataConfig& config, const std::string& split, int64_t limit, uint64_t seed);

/// At most `limit` images of `ds` (0: all): a seeded shuffle keeping at most ceil(limit / K) of
/// each of the K classes, so that a small subset has every class in the split's balance.
DatasetPtr stratified_subset(DatasetPtr ds, int64_t limit, uint64_t seed);

}  // namespace moejet::data
