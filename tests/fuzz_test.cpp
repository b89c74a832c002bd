// A seeded mutation fuzzer per parser: each seed file of tests/data/fuzz/ is mutated a fixed
// number of times (bit flips, boundary integers, deletions, insertions, truncation, huge numbers
// in text) and handed to the parser. A parser may accept the input or throw moejet::Error; any
// other exception (std::out_of_range, nlohmann or libtorch errors, bad_alloc) fails the test, and
// a crash fails the whole binary. Failing inputs are kept under $TMPDIR/moejet-fuzz-failures/ for
// reproduction. The loop is deterministic: a failure reproduces on every run.

#include <caffe2/serialize/inline_container.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/json_util.h"
#include "moejet/data/dataset.h"
#include "moejet/data/superclasses.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/train/train_config.h"
#include "test_util.h"

namespace moejet {
namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

constexpr int kMutationsPerSeed = 2000;

std::string corpus(const std::string& name) {
  return moejet::testing::test_data_dir() + "/fuzz/" + name;
}

Bytes read_bytes(const std::string& path) {
  auto v = read_file_bytes(path);
  return Bytes(v.begin(), v.end());
}

void write_bytes(const fs::path& path, const Bytes& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// One to four stacked mutations of `in`, chosen by `rng`.
Bytes mutate(Bytes in, std::mt19937_64& rng, bool text) {
  auto pick = [&rng](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); };
  static const uint8_t kBytes[] = {0, 1, 0x7f, 0x80, 0xff, '{', '[', '"', '9', '-', '.', ']', '}', ','};
  static const uint64_t kWords[] = {0,        1,        0x7fffffff,        0x80000000,        0xffffffff,
                                    1u << 20, 1u << 30, uint64_t{1} << 40, uint64_t{1} << 62, ~uint64_t{0}};
  static const char* kNumbers[] = {
      "99999999999999999999", "-1", "1e999", "nan", "-0", "4294967296", "1e-320", "0.5", "[[[[", "null", "\"x\""};
  const int rounds = 1 + static_cast<int>(rng() % 4);
  for (int r = 0; r < rounds && !in.empty(); ++r) {
    const size_t at = pick(in.size());
    switch (rng() % (text ? 8 : 7)) {
      case 0:
        in[at] = static_cast<char>(in[at] ^ (1 << (rng() % 8)));
        break;
      case 1:
        in[at] = static_cast<char>(kBytes[pick(sizeof kBytes)]);
        break;
      case 2:
      case 3: {
        const size_t width = rng() % 2 ? 4 : 8;
        const uint64_t w = kWords[pick(sizeof kWords / sizeof kWords[0])];
        for (size_t k = 0; k < width && at + k < in.size(); ++k)
          in[at + k] = static_cast<char>(w >> (8 * k));
      } break;
      case 4:
        in.erase(at, 1 + pick(16));
        break;
      case 5: {
        const size_t from = pick(in.size());
        in.insert(at, in.substr(from, 1 + pick(32)));
      } break;
      case 6:
        in.resize(at);
        break;
      case 7: {  // text: a number (or any token) becomes an extreme one
        size_t end = at;
        while (end < in.size() && (std::isdigit(static_cast<unsigned char>(in[end])) || in[end] == '.'))
          ++end;
        in.replace(at, std::max<size_t>(end - at, 1), kNumbers[pick(sizeof kNumbers / sizeof kNumbers[0])]);
      } break;
    }
  }
  return in;
}

// Runs `parse` on kMutationsPerSeed mutations of `seed`; `write` puts a candidate where the parser
// reads it. Returns the number of inputs the parser accepted (so a test can check that the
// mutations do not all fail at the first byte).
int fuzz(const std::string& target, const Bytes& seed, bool text, const std::function<void(const Bytes&)>& write,
         const std::function<void()>& parse) {
  std::mt19937_64 rng(std::hash<std::string>{}(target)&0xffffffff);
  int accepted = 0;
  for (int i = 0; i < kMutationsPerSeed; ++i) {
    const Bytes input = i == 0 ? seed : mutate(seed, rng, text);
    write(input);
    std::string failure;
    try {
      parse();
      ++accepted;
    } catch (const Error&) {
      // a clear error naming the input: what the parser should do
    } catch (const std::exception& e) {
      failure = std::string("unexpected ") + typeid(e).name() + ": " + e.what();
    }
    if (i == 0) {
      EXPECT_TRUE(failure.empty() && accepted == 1) << target << ": the seed itself must parse";
    }
    if (!failure.empty()) {
      const fs::path keep = fs::temp_directory_path() / "moejet-fuzz-failures" / (target + "-" + std::to_string(i));
      write_bytes(keep, input);
      ADD_FAILURE() << target << " mutation " << i << ": " << failure.substr(0, 400) << "\n  input kept in "
                    << keep.string();
    }
  }
  ::testing::Test::RecordProperty(target + "_accepted", accepted);
  return accepted;
}

TEST(Fuzz, Safetensors) {
  moejet::testing::TempDir dir;
  const std::string path = dir.file("x.safetensors");
  fuzz(
      "safetensors", read_bytes(corpus("safetensors/small.safetensors")), false,
      [&](const Bytes& b) { write_bytes(path, b); },
      [&] {
        io::Metadata meta;
        io::read_checkpoint(path, &meta);
      });
}

TEST(Fuzz, TorchSaveZip) {
  moejet::testing::TempDir dir;
  const std::string path = dir.file("x.pth");
  for (const char* seed : {"pth/tiny_state_dict.pth", "pth/tiny_train_checkpoint.pth"}) {
    fuzz(
        std::string("pth-zip-") + fs::path(seed).stem().string(), read_bytes(corpus(seed)), false,
        [&](const Bytes& b) { write_bytes(path, b); }, [&] { io::read_checkpoint(path); });
  }
}

// The pickle inside a valid zip: the zip's CRCs would reject most byte-level mutations of the
// whole file before the unpickler saw them.
TEST(Fuzz, TorchSavePickle) {
  moejet::testing::TempDir dir;
  const std::string path = dir.file("x.pth");
  for (const char* seed : {"pth/tiny_state_dict.pth", "pth/tiny_train_checkpoint.pth"}) {
    caffe2::serialize::PyTorchStreamReader reader(corpus(seed));
    std::vector<std::pair<std::string, Bytes>> records;
    Bytes pickle;
    for (const auto& name : reader.getAllRecords()) {
      auto [data, size] = reader.getRecord(name);
      Bytes bytes(static_cast<const char*>(data.get()), size);
      if (name == "data.pkl") {
        pickle = bytes;
      } else {
        records.emplace_back(name, bytes);
      }
    }
    ASSERT_FALSE(pickle.empty()) << seed;
    const int accepted = fuzz(
        std::string("pth-pickle-") + fs::path(seed).stem().string(), pickle, false,
        [&](const Bytes& b) {
          caffe2::serialize::PyTorchStreamWriter writer(path);
          writer.writeRecord("data.pkl", b.data(), b.size());
          for (const auto& [name, bytes] : records) {
            writer.writeRecord(name, bytes.data(), bytes.size());
          }
          writer.writeEndOfFile();
        },
        [&] { io::read_checkpoint(path); });
    EXPECT_GT(accepted, 1) << "no mutation got past the first opcode";
  }
}

TEST(Fuzz, Idx) {
  moejet::testing::TempDir dir;
  const Bytes images = read_bytes(corpus("idx/images.idx")), labels = read_bytes(corpus("idx/labels.idx"));
  write_bytes(dir.file("labels"), labels);
  write_bytes(dir.file("images"), images);
  auto open = [&](const std::string& img) { data::open_idx(dir.file(img), dir.file("labels"), {})->get(0); };
  fuzz(
      "idx-images", images, false, [&](const Bytes& b) { write_bytes(dir.file("images.x"), b); },
      [&] { open("images.x"); });
  fuzz(
      "idx-images-gz", read_bytes(corpus("idx/images.idx.gz")), false,
      [&](const Bytes& b) { write_bytes(dir.file("images.x.gz"), b); }, [&] { open("images.x.gz"); });
  fuzz(
      "idx-labels", labels, false, [&](const Bytes& b) { write_bytes(dir.file("labels"), b); },
      [&] { open("images"); });
}

TEST(Fuzz, CifarAndStl) {
  moejet::testing::TempDir dir;
  fuzz(
      "cifar", read_bytes(corpus("cifar/data_batch_1.bin")), false,
      [&](const Bytes& b) { write_bytes(dir.file("cifar/test_batch.bin"), b); },
      [&] { data::open_cifar10(dir.file("cifar"), false)->get(0); });
  const Bytes x = read_bytes(corpus("stl/test_X.bin")), y = read_bytes(corpus("stl/test_y.bin"));
  write_bytes(dir.file("stl/test_X.bin"), x);
  fuzz(
      "stl-labels", y, false, [&](const Bytes& b) { write_bytes(dir.file("stl/test_y.bin"), b); },
      [&] { data::open_stl10(dir.file("stl"), false)->get(0); });
  write_bytes(dir.file("stl/test_y.bin"), y);
  fuzz(
      "stl-images", x, false, [&](const Bytes& b) { write_bytes(dir.file("stl/test_X.bin"), b); },
      [&] { data::open_stl10(dir.file("stl"), false)->get(0); });
}

TEST(Fuzz, JsonConfigs) {
  moejet::testing::TempDir dir;
  Bytes current;
  fuzz(
      "train-config", read_bytes(corpus("json/vit_fmnist.json")), true, [&](const Bytes& b) { current = b; },
      [&] {
        auto cfg = train::train_config_from_json(parse_json(current, "vit_fmnist.json"));
        (void)train::to_json(cfg);
      });
  fuzz(
      "superclasses", read_bytes(corpus("json/superclasses.json")), true,
      [&](const Bytes& b) { write_bytes(dir.file("sc.json"), b); },
      [&] { data::read_superclasses(dir.file("sc.json"), 3); });
}

TEST(Fuzz, Images) {
  moejet::testing::TempDir dir;
  for (const char* seed : {"image/cat.jpg", "image/small.png", "image/small.pgm", "image/small.bmp"}) {
    const std::string root = dir.file(fs::path(seed).filename().string());
    const std::string file = root + "/c/0" + fs::path(seed).extension().string();
    fuzz(
        std::string("image-") + fs::path(seed).filename().string(), read_bytes(corpus(seed)), false,
        [&](const Bytes& b) { write_bytes(file, b); }, [&] { data::open_image_folder(root)->get(0); });
  }
}

}  // namespace
}  // namespace moejet
