#pragma once
// Image-classification data sets. A Dataset is random access: get(i) returns the i-th image as a
// uint8 [C, H, W] tensor with its class label. Readers exist for IDX (MNIST / Fashion-MNIST, gzipped
// or not), CIFAR-10/100 binary, STL-10 binary and image folders (one sub-folder per class, JPEG/PNG).
// open_dataset() resolves a spec string such as "fashion-mnist", "cifar10:/path" or
// "folder:/path/train" so that configs and the CLI name data sets the same way.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace moejet::data {

struct Sample {
  torch::Tensor image;  ///< uint8 [C, H, W]
  int64_t label = -1;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  /// Thread-safe: called concurrently by the loader's workers.
  virtual Sample get(size_t index) const = 0;
  virtual int64_t num_classes() const = 0;
  /// Class names in label order; "0", "1", ... when the format has none.
  virtual std::vector<std::string> class_names() const;
  /// Channels of every image (1 or 3).
  virtual int64_t channels() const = 0;
  /// Labels of all samples in order (used for stratified subsets and class filtering).
  virtual std::vector<int64_t> labels() const;
  /// Human-readable description for logs ("fashion-mnist train: 60000 images, 10 classes").
  virtual std::string describe() const = 0;
};

using DatasetPtr = std::shared_ptr<const Dataset>;

/// IDX image file (magic 0x00000803, uint8) + IDX label file (0x00000801); .gz accepted.
DatasetPtr open_idx(const std::string& images_path, const std::string& labels_path,
                    std::vector<std::string> class_names = {});
/// As above, with the name describe() starts with ("fashion-mnist train"); "" = the image file.
DatasetPtr open_idx(const std::string& images_path, const std::string& labels_path,
                    std::vector<std::string> class_names, const std::string& description);

/// CIFAR binary batches: `dir` holds data_batch_{1..5}.bin/test_batch.bin (CIFAR-10,
/// `fine_labels` ignored) or train.bin/test.bin (CIFAR-100, fine labels). batches.meta.txt /
/// fine_label_names.txt give class names when present.
DatasetPtr open_cifar10(const std::string& dir, bool train);
DatasetPtr open_cifar100(const std::string& dir, bool train);

/// STL-10 binary: train_X.bin/train_y.bin or test_X.bin/test_y.bin (96x96x3, column-major images,
/// labels 1..10), class_names.txt when present.
DatasetPtr open_stl10(const std::string& dir, bool train);

/// PIL's Image.MAX_IMAGE_PIXELS: an image file claiming more pixels is refused before it is
/// decoded, since a 200-byte header can claim 20000x20000 (1.2 GB to decode).
constexpr int64_t kDefaultMaxImagePixels = 89478485;

/// Image folder: dir/<class>/<image>.{jpg,jpeg,png,bmp}; classes sorted by name (as torchvision's
/// ImageFolder). Images are decoded on access; `channels` forces 1 or 3 channels (0 = from the
/// first image). An image whose header declares more than `max_pixels` pixels is a DataError
/// (0 = no limit).
DatasetPtr open_image_folder(const std::string& dir, int channels = 0, int64_t max_pixels = kDefaultMaxImagePixels);

/// The image files named by `inputs`, in order: an image file is taken as it is, a folder
/// contributes its image files (recursively, sorted by path), and any other file is a list with one
/// image path per line (blank lines and lines starting with '#' skipped; a relative path is taken
/// from the list's folder). A missing path or an empty result is a DataError naming it.
std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs);

/// Unlabelled images (label -1, no classes), decoded on access as open_image_folder's, with
/// `channels` 1 or 3 (converted as stb_image converts: RGB to luma, grey to RGB).
DatasetPtr open_image_files(std::vector<std::string> files, int channels, int64_t max_pixels = kDefaultMaxImagePixels);

/// Resolves a data set spec: "fashion-mnist" / "mnist" (Debian's dataset packages under
/// /usr/share/datasets, or MOEJET_DATA_DIR), "idx:<dir>", "cifar10:<dir>", "cifar100:<dir>",
/// "stl10:<dir>", "folder:<dir>" (the split's sub-folder `train`/`test` is used when it exists).
/// `split` is "train" or "test". `max_image_pixels` bounds image files (see open_image_folder).
DatasetPtr open_dataset(const std::string& spec, const std::string& split,
                        int64_t max_image_pixels = kDefaultMaxImagePixels);

/// An in-memory data set over `images` uint8 [N, C, H, W] and `labels` (N values in
/// [0, class_names.size())). The fixed-size readers build on it; so can tests and tools.
DatasetPtr make_memory_dataset(torch::Tensor images, std::vector<int64_t> labels, std::vector<std::string> class_names,
                               std::string description);

/// A view on a subset of another data set (indices into it), optionally relabelling classes.
/// Used for upstream/downstream class splits and for holding out validation data.
DatasetPtr subset(DatasetPtr base, std::vector<size_t> indices, std::string description);

/// Keeps only samples whose label is in `classes`, relabelled to 0..classes.size()-1 in the
/// order given.
DatasetPtr filter_classes(DatasetPtr base, const std::vector<int64_t>& classes);

}  // namespace moejet::data
