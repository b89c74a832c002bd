#include "moejet/data/dataset.h"

#include <cstdlib>
#include <filesystem>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"

namespace moejet::data {

namespace fs = std::filesystem;

std::vector<std::string> Dataset::class_names() const {
  std::vector<std::string> names;
  for (int64_t k = 0; k < num_classes(); ++k) {
    names.push_back(std::to_string(k));
  }
  return names;
}

std::vector<int64_t> Dataset::labels() const {
  // Generic fallback: decodes every sample. Readers that know their labels override it.
  std::vector<int64_t> out(size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = get(i).label;
  }
  return out;
}

namespace {

class MemoryDataset final : public Dataset {
 public:
  MemoryDataset(torch::Tensor images, std::vector<int64_t> labels, std::vector<std::string> class_names,
                std::string description)
      : images_(std::move(images)),
        labels_(std::move(labels)),
        class_names_(std::move(class_names)),
        description_(std::move(description)) {
    check<DataError>(images_.dim() == 4 && images_.scalar_type() == torch::kByte,
                     "{}: images must be uint8 [N, C, H, W], got {} {}", description_,
                     std::string(c10::toString(images_.scalar_type())),
                     fmt::format("{}", fmt::join(images_.sizes(), "x")));
    check<DataError>(images_.size(1) == 1 || images_.size(1) == 3, "{}: images must have 1 or 3 channels, got {}",
                     description_, images_.size(1));
    check<DataError>(static_cast<size_t>(images_.size(0)) == labels_.size(), "{}: {} images but {} labels",
                     description_, images_.size(0), labels_.size());
    const auto k = static_cast<int64_t>(class_names_.size());
    for (size_t i = 0; i < labels_.size(); ++i) {
      check<DataError>(labels_[i] >= 0 && labels_[i] < k, "{}: label {} of sample {} is outside [0, {})", description_,
                       labels_[i], i, k);
    }
    images_ = images_.contiguous();
  }

  size_t size() const override {
    return labels_.size();
  }
  Sample get(size_t index) const override {
    check<DataError>(index < labels_.size(), "{}: index {} out of range (size {})", description_, index,
                     labels_.size());
    // A clone, not a view: a transform that writes in place must not corrupt the data set.
    return {images_[static_cast<int64_t>(index)].clone(), labels_[index]};
  }
  int64_t num_classes() const override {
    return static_cast<int64_t>(class_names_.size());
  }
  std::vector<std::string> class_names() const override {
    return class_names_;
  }
  int64_t channels() const override {
    return images_.size(1);
  }
  std::vector<int64_t> labels() const override {
    return labels_;
  }
  std::string describe() const override {
    return fmt::format("{}: {} images {}x{}x{}, {} classes", description_, labels_.size(), images_.size(2),
                       images_.size(3), images_.size(1), class_names_.size());
  }

 private:
  torch::Tensor images_;
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
  std::string description_;
};

/// Indices into a base data set, with an optional label map (old label -> new label).
class SubsetDataset final : public Dataset {
 public:
  SubsetDataset(DatasetPtr base, std::vector<size_t> indices, std::vector<int64_t> labels,
                std::vector<std::string> class_names, std::vector<int64_t> label_map, std::string description)
      : base_(std::move(base)),
        indices_(std::move(indices)),
        labels_(std::move(labels)),
        class_names_(std::move(class_names)),
        label_map_(std::move(label_map)),
        description_(std::move(description)) {}

  size_t size() const override {
    return indices_.size();
  }
  Sample get(size_t index) const override {
    check<DataError>(index < indices_.size(), "{}: index {} out of range (size {})", description_, index,
                     indices_.size());
    Sample s = base_->get(indices_[index]);
    if (!label_map_.empty()) {
      s.label = label_map_.at(static_cast<size_t>(s.label));
    }
    return s;
  }
  int64_t num_classes() const override {
    return static_cast<int64_t>(class_names_.size());
  }
  std::vector<std::string> class_names() const override {
    return class_names_;
  }
  int64_t channels() const override {
    return base_->channels();
  }
  std::vector<int64_t> labels() const override {
    return labels_;
  }
  std::string describe() const override {
    return fmt::format("{}: {} images, {} classes (of {})", description_, indices_.size(), class_names_.size(),
                       base_->describe());
  }

 private:
  DatasetPtr base_;
  std::vector<size_t> indices_;
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
  std::vector<int64_t> label_map_;
  std::string description_;
};

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

constexpr const char* kAcceptedSpecs =
    "fashion-mnist, mnist, fashion-mnist:<dir>, mnist:<dir>, idx:<dir>, cifar10:<dir>, "
    "cifar100:<dir>, stl10:<dir>, folder:<dir>";

/// Finds `<dir>/<stem>` or `<dir>/<stem>.gz`.
std::string find_idx_file(const std::string& dir, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem}) {
    std::string p = (fs::path(dir) / name).string();
    if (file_exists(p)) {
      return p;
    }
  }
  throw DataError(fmt::format("{}: no {} or {}.gz (IDX data set files)", dir, stem, stem));
}

DatasetPtr open_idx_dir(const std::string& dir, bool train, std::vector<std::string> names, const std::string& hint,
                        const std::string& description) {
  check<DataError>(fs::is_directory(dir), "{}: data set directory not found{}", dir,
                   hint.empty() ? "" : " (" + hint + ")");
  const std::string prefix = train ? "train" : "t10k";
  return open_idx(find_idx_file(dir, prefix + "-images-idx3-ubyte"), find_idx_file(dir, prefix + "-labels-idx1-ubyte"),
                  std::move(names), description);
}

}  // namespace

DatasetPtr make_memory_dataset(torch::Tensor images, std::vector<int64_t> labels, std::vector<std::string> class_names,
                               std::string description) {
  return std::make_shared<MemoryDataset>(std::move(images), std::move(labels), std::move(class_names),
                                         std::move(description));
}

DatasetPtr subset(DatasetPtr base, std::vector<size_t> indices, std::string description) {
  check<DataError>(base != nullptr, "subset '{}': base data set is null", description);
  std::vector<int64_t> base_labels = base->labels();
  std::vector<int64_t> labels;
  labels.reserve(indices.size());
  for (size_t i : indices) {
    check<DataError>(i < base_labels.size(), "subset '{}': index {} out of range for {}", description, i,
                     base->describe());
    labels.push_back(base_labels[i]);
  }
  auto names = base->class_names();
  return std::make_shared<SubsetDataset>(std::move(base), std::move(indices), std::move(labels), std::move(names),
                                         std::vector<int64_t>{}, std::move(description));
}

DatasetPtr filter_classes(DatasetPtr base, const std::vector<int64_t>& classes) {
  check<DataError>(base != nullptr, "filter_classes: base data set is null");
  const int64_t k = base->num_classes();
  std::vector<int64_t> label_map(static_cast<size_t>(k), -1);
  std::vector<std::string> base_names = base->class_names(), names;
  for (size_t j = 0; j < classes.size(); ++j) {
    int64_t c = classes[j];
    check<ConfigError>(c >= 0 && c < k, "filter_classes: class {} outside [0, {}) of {}", c, k, base->describe());
    check<ConfigError>(label_map[c] < 0, "filter_classes: class {} listed twice", c);
    label_map[c] = static_cast<int64_t>(j);
    names.push_back(base_names.at(c));
  }
  std::vector<int64_t> base_labels = base->labels(), labels;
  std::vector<size_t> indices;
  for (size_t i = 0; i < base_labels.size(); ++i) {
    int64_t m = label_map.at(static_cast<size_t>(base_labels[i]));
    if (m >= 0) {
      indices.push_back(i);
      labels.push_back(m);
    }
  }
  std::string desc = fmt::format("{} classes [{}]", classes.size(), fmt::join(classes, ","));
  return std::make_shared<SubsetDataset>(std::move(base), std::move(indices), std::move(labels), std::move(names),
                                         std::move(label_map), std::move(desc));
}

DatasetPtr open_dataset(const std::string& spec, const std::string& split, int64_t max_image_pixels) {
  check<ConfigError>(split == "train" || split == "test", "data set '{}': split must be 'train' or 'test', got '{}'",
                     spec, split);
  const bool train = split == "train";
  const auto colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string dir = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (colon != std::string::npos) {
    check<ConfigError>(!dir.empty(), "data set '{}': empty directory (accepted forms: {})", spec, kAcceptedSpecs);
  }

  if (kind == "fashion-mnist" || kind == "mnist") {
    std::string d = dir;
    if (d.empty()) {
      d = (fs::path(env_or("MOEJET_DATA_DIR", "/usr/share/datasets")) / kind).string();
    }
    std::vector<std::string> names;
    if (kind == "fashion-mnist") {
      names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    } else {
      names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    }
    return open_idx_dir(d, train, std::move(names), dir.empty() ? "set MOEJET_DATA_DIR or install dataset-" + kind : "",
                        kind + " " + split);
  }
  if (colon == std::string::npos) {
    throw ConfigError(fmt::format("unknown data set '{}' (accepted forms: {})", spec, kAcceptedSpecs));
  }
  if (kind == "idx") {
    return open_idx_dir(dir, train, {}, "", "idx " + split);
  }
  if (kind == "cifar10") {
    return open_cifar10(dir, train);
  }
  if (kind == "cifar100") {
    return open_cifar100(dir, train);
  }
  if (kind == "stl10") {
    return open_stl10(dir, train);
  }
  if (kind == "folder") {
    // DIR/<split>/ (an eval split also takes DIR/val/), or a flat DIR/<class>/ as the training
    // split. Evaluating a folder with no held-out split would score the training images (or, with
    // only DIR/train/, one class named "train"): an error that says how to make one.
    std::vector<std::string> candidates = {split};
    if (!train && split != "val") {
      candidates.push_back("val");
    }
    for (const auto& sub : candidates) {
      fs::path p = fs::path(dir) / sub;
      if (fs::is_directory(p)) {
        return open_image_folder(p.string(), 0, max_image_pixels);
      }
    }
    const bool split_layout = fs::is_directory(fs::path(dir) / "train");
    check<DataError>(train && !split_layout,
                     "{}: no '{}' split: expected {}/{}/<class>/ {}; add a held-out folder, or carve one from "
                     "the training images with data.val_split (e.g. --set data.val_split=0.1)",
                     spec, split, dir, split, train ? "" : "or " + dir + "/val/<class>/");
    return open_image_folder(dir, 0, max_image_pixels);
  }
  throw ConfigError(fmt::format("unknown data set kind '{}' in '{}' (accepted forms: {})", kind, spec, kAcceptedSpecs));
}

}  // namespace moejet::data
