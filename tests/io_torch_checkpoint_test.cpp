#include <caffe2/serialize/inline_container.h>

#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"
#include "test_util.h"

// The .pth fixtures are written by tests/data/make_torch_checkpoint.py with torch 1.13.

namespace moejet::io {
namespace {

using moejet::testing::TempDir;
using moejet::testing::test_data_dir;
using moejet::testing::throws_error;

// Runs `fn`, which must throw CheckpointError, and returns the message (for a test that checks
// what the message must not contain).
template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a CheckpointError";
  return "";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

torch::Tensor fc_weight() {
  return torch::arange(6, torch::kFloat32).reshape({2, 3});
}
torch::Tensor fc_bias() {
  return torch::tensor({1.0f, 2.0f});
}

TEST(TorchCheckpoint, ReadsOrderedDictStateDict) {
  StateDict state = read_torch_checkpoint(test_data_dir() + "/tiny_state_dict.pth");
  ASSERT_EQ(state.keys(), (std::vector<std::string>{"fc.weight", "fc.bias", "count"}));
  EXPECT_EQ(state["fc.weight"].scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(state["fc.weight"], fc_weight()));
  EXPECT_TRUE(torch::equal(state["fc.bias"], fc_bias()));
  EXPECT_EQ(state["count"].scalar_type(), torch::kInt64);
  EXPECT_EQ(state["count"].sizes(), (std::vector<int64_t>{1}));
  EXPECT_EQ(state["count"][0].item<int64_t>(), 7);
}

TEST(TorchCheckpoint, UnwrapsStateDictAndStripsModulePrefix) {
  StateDict state = read_torch_checkpoint(test_data_dir() + "/tiny_wrapped.pth");
  ASSERT_EQ(state.keys(), (std::vector<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_TRUE(torch::equal(state["fc.weight"], fc_weight()));
  EXPECT_TRUE(torch::equal(state["fc.bias"], fc_bias()));
}

TEST(TorchCheckpoint, ReadsTrainCheckpointWithModuleStateDictAndPythonObjects) {
  // model.state_dict() carries _metadata (pickled via BUILD) and the checkpoint holds an
  // argparse.Namespace: both defeat libtorch 1.13's own unpickler.
  StateDict state = read_torch_checkpoint(test_data_dir() + "/tiny_train_checkpoint.pth");
  ASSERT_EQ(state.keys(), (std::vector<std::string>{"0.weight", "0.bias"}));
  EXPECT_TRUE(torch::equal(state["0.weight"], fc_weight() / 4));
  EXPECT_TRUE(torch::equal(state["0.bias"], torch::tensor({-1.0f, 0.5f})));
}

TEST(TorchCheckpoint, ViewsOfOneStorageKeepOffsetsAndStrides) {
  StateDict state = read_torch_checkpoint(test_data_dir() + "/tiny_views.pth");
  ASSERT_EQ(state.keys(), (std::vector<std::string>{"full", "row", "col"}));
  auto full = torch::arange(12, torch::kFloat32).reshape({3, 4});
  EXPECT_TRUE(torch::equal(state["full"], full));
  EXPECT_TRUE(torch::equal(state["row"], torch::tensor({4.0f, 5.0f, 6.0f, 7.0f})));
  EXPECT_TRUE(torch::equal(state["col"], torch::tensor({2.0f, 6.0f, 10.0f})));
  // Partial views are copied out, so writing to one entry leaves the others alone.
  state["row"].zero_();
  EXPECT_TRUE(torch::equal(state["full"], full));
}

TEST(TorchCheckpoint, ReadCheckpointDispatchesOnContent) {
  TempDir dir;
  // Extensions do not matter: a torch zip named .safetensors is still read as torch.
  const std::string renamed = dir.file("weights.safetensors");
  auto bytes = read_file_bytes(test_data_dir() + "/tiny_wrapped.pth");
  {
    std::ofstream out(renamed, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  Metadata meta;
  StateDict torch_state = read_checkpoint(renamed, &meta);
  EXPECT_EQ(torch_state.keys(), (std::vector<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_TRUE(meta.empty());

  const std::string fixture = moejet::testing::fixture_path("timm/vit_small_custom/vit_small_custom.safetensors");
  StateDict st = read_checkpoint(fixture, &meta);
  EXPECT_EQ(st.size(), 32u);
  EXPECT_EQ(st["pos_embed"].sizes(), (std::vector<int64_t>{1, 65, 64}));

  // And a safetensors file written by us under a .pth name.
  const std::string st_as_pth = dir.file("model.pth");
  StateDict small;
  small.insert("w", fc_weight());
  write_safetensors(st_as_pth, small, {{"k", "v"}});
  StateDict back = read_checkpoint(st_as_pth, &meta);
  EXPECT_TRUE(torch::equal(back["w"], fc_weight()));
  EXPECT_EQ(meta.at("k"), "v");
}

TEST(TorchCheckpoint, TextFileRenamedPthIsAClearError) {
  TempDir dir;
  const std::string path = dir.file("notes.pth");
  write_text(path, "these are not the weights you are looking for\n");
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_torch_checkpoint(path); }, {path, "not a PyTorch checkpoint"}));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_checkpoint(path); },
                                            {path, "neither a torch.save zip archive nor a safetensors file"}));

  // A safetensors file handed to the torch reader is named as such.
  const std::string st = dir.file("real.safetensors");
  StateDict small;
  small.insert("w", fc_bias());
  write_safetensors(st, small);
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_torch_checkpoint(st); }, {"safetensors file"}));
}

TEST(TorchCheckpoint, LegacyPickleAsksForResave) {
  TempDir dir;
  const std::string path = dir.file("legacy.pth");
  // What pre-1.6 torch.save wrote: a bare pickle starting with the magic number.
  const unsigned char legacy[] = {0x80, 0x02, 0x8a, 0x0a, 'l', 0xfc, 0x9c, 'F', 0xf9, ' ', 'j', 0xa8, 'P', 0x19, '.'};
  write_text(path, std::string(reinterpret_cast<const char*>(legacy), sizeof(legacy)));
  for (auto read :
       {+[](const std::string& p) { read_torch_checkpoint(p); }, +[](const std::string& p) { read_checkpoint(p); }}) {
    EXPECT_TRUE(throws_error<CheckpointError>([&] { read(path); }, {path, "legacy", "zip format"}));
  }
}

TEST(TorchCheckpoint, TruncatedZipIsAClearError) {
  TempDir dir;
  const std::string path = dir.file("cut.pth");
  auto bytes = read_file_bytes(test_data_dir() + "/tiny_state_dict.pth");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  std::string msg = error_of([&] { read_torch_checkpoint(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_EQ(msg.find("frame #"), std::string::npos) << "no libtorch backtrace: " << msg;
}

TEST(TorchCheckpoint, MissingFileNamesPath) {
  EXPECT_TRUE(throws_error<CheckpointError>([] { read_checkpoint("/nonexistent/x.pth"); }, {"/nonexistent/x.pth"}));
}

}  // namespace
}  // namespace moejet::io

namespace moejet::io {
namespace {

// A torch.save-style zip whose data.pkl is `pickle`, written with libtorch's zip writer.
void write_pth(const std::string& path, const std::string& pickle) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeEndOfFile();
}

TEST(TorchCheckpoint, DeeplyNestedPickleIsAnErrorNotACrash) {
  TempDir dir;
  // [[[...]]] 200k deep: EMPTY_LIST 200k times, then APPEND each into the one below.
  const size_t depth = 200000;
  std::string pickle = "\x80\x02";
  pickle += std::string(depth, ']') + std::string(depth - 1, 'a') + ".";
  write_pth(dir.file("deep.pth"), pickle);
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_torch_checkpoint(dir.file("deep.pth")); },
                                            {"expected a dict of tensors (a state dict), found a list"}));
}

}  // namespace
}  // namespace moejet::io

namespace moejet::io {
namespace {

TEST(TorchCheckpoint, ARecordDeclaringMoreBytesThanTheArchiveHoldsIsRefusedBeforeAllocating) {
  TempDir dir;
  auto bytes = read_file_bytes(test_data_dir() + "/tiny_state_dict.pth");
  // The central directory entry of .../data.pkl: its uncompressed size (offset 24) claims 3.75 GB.
  const std::string entry = std::string("PK\x01\x02", 4);
  std::string text(bytes.begin(), bytes.end());
  size_t at = 0;
  bool patched = false;
  while ((at = text.find(entry, at)) != std::string::npos) {
    const size_t name_len =
        static_cast<unsigned char>(text[at + 28]) | (static_cast<unsigned char>(text[at + 29]) << 8);
    if (text.compare(at + 46, name_len, "tiny_state_dict/data.pkl") == 0 ||
        text.substr(at + 46, name_len).find("/data.pkl") != std::string::npos) {
      for (int k = 0; k < 4; ++k)
        text[at + 24 + k] = k == 3 ? '\xf0' : '\0';
      patched = true;
    }
    at += 4;
  }
  ASSERT_TRUE(patched);
  write_text(dir.file("bomb.pth"), text);
  EXPECT_TRUE(
      throws_error<CheckpointError>([&] { read_torch_checkpoint(dir.file("bomb.pth")); },
                                    {"data.pkl' declares 4026531840 bytes, more than this", dir.file("bomb.pth")}));
}

}  // namespace
}  // namespace moejet::io
