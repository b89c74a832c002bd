// torchvision-style ImageFolder: root/<class>/**/<image>, classes and files in sorted order, so
// labels match what torchvision assigns to the same tree. Images are decoded on access with
// stb_image (JPEG, PNG, BMP, PNM, TGA, GIF).

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/data/dataset.h"
#include "stb_image.h"

namespace moejet::data {

namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* const kExts[] = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pnm", ".tga", ".gif"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

/// stb's channel count -> ours: grey(+alpha) -> 1, RGB(A) -> 3.
int64_t channels_for(int comp) {
  return comp <= 2 ? 1 : 3;
}

// A file's bytes, read once: its header is checked against the pixel limit before anything is
// decoded (a file claiming a huge size then costs nothing), and the same bytes are decoded.
// `comp`, when given, receives the header's channel count; an unreadable header is then an error.
std::vector<char> read_image(const std::string& path, int64_t max_pixels, int* comp) {
  std::vector<char> bytes;
  try {
    bytes = read_file_bytes(path);
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    throw DataError(e.what());
  }
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size = static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX));
  int w = 0, h = 0, c = 0;
  if (stbi_info_from_memory(data, size, &w, &h, &c) != 1) {
    check<DataError>(comp == nullptr, "{}: cannot decode image header ({})", path,
                     stbi_failure_reason() ? stbi_failure_reason() : "unknown reason");
    return bytes;  // stbi_load gives its own error
  }
  if (comp != nullptr)
    *comp = c;
  const int64_t pixels = int64_t{w} * h;
  check<DataError>(max_pixels <= 0 || pixels <= max_pixels,
                   "{}: {}x{} image ({} pixels) is over the {}-pixel limit{}; if it is real, raise "
                   "data.max_image_pixels (--set data.max_image_pixels=N, or eval --max-image-pixels N; 0 = "
                   "no limit)",
                   path, w, h, pixels, max_pixels,
                   max_pixels == kDefaultMaxImagePixels ? " (PIL's MAX_IMAGE_PIXELS)" : "");
  return bytes;
}

class ImageFolderDataset final : public Dataset {
 public:
  ImageFolderDataset(std::string root, std::vector<std::string> classes, std::vector<std::string> files,
                     std::vector<int64_t> labels, int channels, int64_t max_pixels)
      : max_pixels_(max_pixels),
        root_(std::move(root)),
        classes_(std::move(classes)),
        files_(std::move(files)),
        labels_(std::move(labels)),
        channels_(channels) {}

  size_t size() const override {
    return files_.size();
  }
  Sample get(size_t index) const override {
    check<DataError>(index < files_.size(), "{}: index {} out of range (size {})", root_, index, files_.size());
    const std::string& path = files_[index];
    const std::vector<char> bytes = read_image(path, max_pixels_, nullptr);
    int w = 0, h = 0, comp = 0;
    stbi_uc* pixels =
        stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                              static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX)), &w, &h, &comp, channels_);
    if (pixels == nullptr) {
      const char* why = stbi_failure_reason();
      throw DataError(fmt::format("{}: cannot decode image ({})", path, why ? why : "unknown reason"));
    }
    auto hwc = torch::from_blob(pixels, {h, w, channels_}, torch::kByte);
    // clone(), not contiguous(): for one channel the permuted view already counts as contiguous
    // and would still point into the buffer freed below.
    auto chw = hwc.permute({2, 0, 1}).clone(torch::MemoryFormat::Contiguous);
    stbi_image_free(pixels);
    return {chw, labels_[index]};
  }
  int64_t num_classes() const override {
    return static_cast<int64_t>(classes_.size());
  }
  std::vector<std::string> class_names() const override {
    return classes_;
  }
  int64_t channels() const override {
    return channels_;
  }
  std::vector<int64_t> labels() const override {
    return labels_;
  }
  std::string describe() const override {
    if (classes_.empty()) {
      return fmt::format("{} image file(s), {} channel(s)", files_.size(), channels_);
    }
    return fmt::format("image folder {}: {} images, {} classes, {} channel(s)", root_, files_.size(), classes_.size(),
                       channels_);
  }

 private:
  int64_t max_pixels_;
  std::string root_;
  std::vector<std::string> classes_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  int channels_;
};

}  // namespace

DatasetPtr open_image_folder(const std::string& dir, int channels, int64_t max_pixels) {
  check<ConfigError>(channels == 0 || channels == 1 || channels == 3,
                     "image folder {}: channels must be 0 (auto), 1 or 3, got {}", dir, channels);
  std::error_code ec;
  check<DataError>(fs::is_directory(dir, ec), "{}: image folder not found", dir);

  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory()) {
      classes.push_back(entry.path().filename().string());
    }
  }
  std::sort(classes.begin(), classes.end());
  check<DataError>(!classes.empty(), "{}: image folder has no class sub-folders", dir);

  std::vector<std::string> files;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    const fs::path class_dir = fs::path(dir) / classes[c];
    // (folder, file name) pairs: sorting them reproduces torchvision's sorted(os.walk(...)) order,
    // where a folder's own files come before those of its sub-folders.
    std::vector<std::pair<std::string, std::string>> class_files;
    for (const auto& entry :
         fs::recursive_directory_iterator(class_dir, fs::directory_options::follow_directory_symlink)) {
      if (entry.is_regular_file() && is_image_file(entry.path())) {
        class_files.emplace_back(entry.path().parent_path().string(), entry.path().filename().string());
      }
    }
    check<DataError>(!class_files.empty(),
                     "{}: class folder has no images (.jpg .jpeg .png .bmp .ppm .pgm .pnm .tga "
                     ".gif)",
                     class_dir.string());
    std::sort(class_files.begin(), class_files.end());
    for (const auto& [folder, name] : class_files) {
      files.push_back((fs::path(folder) / name).string());
      labels.push_back(static_cast<int64_t>(c));
    }
  }

  if (channels == 0) {
    int comp = 0;
    read_image(files[0], max_pixels, &comp);
    channels = static_cast<int>(channels_for(comp));
  }
  return std::make_shared<ImageFolderDataset>(dir, std::move(classes), std::move(files), std::move(labels), channels,
                                              max_pixels);
}

std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    std::error_code ec;
    const fs::path path(input);
    check<DataError>(fs::exists(path, ec), "{}: no such file or folder", input);
    if (fs::is_directory(path, ec)) {
      std::vector<std::string> found;
      for (const auto& entry :
           fs::recursive_directory_iterator(path, fs::directory_options::follow_directory_symlink)) {
        if (entry.is_regular_file() && is_image_file(entry.path())) {
          found.push_back(entry.path().string());
        }
      }
      check<DataError>(!found.empty(), "{}: folder has no images (.jpg .jpeg .png .bmp .ppm .pgm .pnm .tga .gif)",
                       input);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (is_image_file(path)) {
      files.push_back(input);
    } else {
      // A list file: one image path per line.
      const auto base = path.parent_path();
      const auto text = read_file_bytes(input);
      size_t line_no = 0, listed = 0;
      std::string line;
      auto take = [&](std::string l) {
        ++line_no;
        while (!l.empty() && (l.back() == '\r' || std::isspace(static_cast<unsigned char>(l.back())))) {
          l.pop_back();
        }
        size_t start = 0;
        while (start < l.size() && std::isspace(static_cast<unsigned char>(l[start]))) {
          ++start;
        }
        l = l.substr(start);
        if (l.empty() || l[0] == '#') {
          return;
        }
        const fs::path p = fs::path(l).is_absolute() ? fs::path(l) : base / l;
        check<DataError>(fs::is_regular_file(p, ec), "{}:{}: {}: no such image file", input, line_no, p.string());
        files.push_back(p.string());
        ++listed;
      };
      for (char c : text) {
        if (c == '\n') {
          take(line);
          line.clear();
        } else {
          line.push_back(c);
        }
      }
      if (!line.empty()) {
        take(line);
      }
      check<DataError>(listed > 0, "{}: neither an image (by its extension) nor a list naming any image", input);
    }
  }
  check<DataError>(!files.empty(), "no images given");
  return files;
}

DatasetPtr open_image_files(std::vector<std::string> files, int channels, int64_t max_pixels) {
  check<ConfigError>(channels == 1 || channels == 3, "image files: channels must be 1 or 3, got {}", channels);
  check<DataError>(!files.empty(), "no images given");
  std::vector<int64_t> labels(files.size(), -1);
  return std::make_shared<ImageFolderDataset>("", std::vector<std::string>{}, std::move(files), std::move(labels),
                                              channels, max_pixels);
}

}  // namespace moejet::data
