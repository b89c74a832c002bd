#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"
#include "test_util.h"

namespace moejet::io {
namespace {

using moejet::testing::TempDir;
using moejet::testing::throws_error;

std::string fixture_path() {
  return moejet::testing::fixture_path("timm/vit_small_custom/vit_small_custom.safetensors");
}

// A safetensors file with a hand-written header, for the malformed cases.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) {
    out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  }
  out << header << data;
}

TEST(Safetensors, RoundTripsEveryDtypeWithMetadataAndOrder) {
  TempDir dir;
  StateDict state;
  // Keys deliberately not sorted: the file must keep state-dict order.
  state.insert("zeta.f64", torch::randn({2, 3}, torch::kFloat64));
  state.insert("alpha.f32", torch::randn({4}));
  state.insert("mid.f16", torch::randn({3, 2}).to(torch::kFloat16));
  state.insert("bf16", torch::randn({5}).to(torch::kBFloat16));
  state.insert("i64", torch::tensor({-(int64_t{1} << 40), int64_t{7}}, torch::kInt64));
  state.insert("i32", torch::tensor({-5, 1 << 30}, torch::kInt32));
  state.insert("i16", torch::tensor({-300, 300}, torch::kInt16));
  state.insert("i8", torch::tensor({-128, 127}, torch::kInt8));
  state.insert("u8", torch::tensor({0, 255}, torch::kUInt8));
  state.insert("bool", torch::tensor({true, false, true}, torch::kBool));
  state.insert("scalar", torch::tensor(3.5f));
  state.insert("empty", torch::zeros({0, 3}));
  state.insert("transposed", torch::arange(6, torch::kFloat32).reshape({2, 3}).t());
  state.insert("grad", torch::ones({2}, torch::requires_grad()));
  Metadata meta{{"format", "pt"}, {"note", "quotes \" and\nnewline, \xc3\xa9"}};

  const std::string path = dir.file("all.safetensors");
  write_safetensors(path, state, meta);

  Metadata read_meta;
  StateDict back = read_safetensors(path, &read_meta);
  EXPECT_EQ(read_meta, meta);
  ASSERT_EQ(back.keys(), state.keys());
  for (const auto& item : state) {
    const torch::Tensor& got = back[item.key()];
    SCOPED_TRACE(item.key());
    EXPECT_EQ(got.scalar_type(), item.value().scalar_type());
    EXPECT_EQ(got.sizes(), item.value().sizes());
    EXPECT_TRUE(torch::equal(got, item.value().detach()));
    EXPECT_TRUE(got.is_contiguous());
  }

  auto bytes = read_file_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  }
  EXPECT_EQ(header_len % 8, 0u);
  // 2*3*8 + 4*4 + 6*2 + 5*2 + 2*8 + 2*4 + 2*2 + 2 + 2 + 3 + 4 + 0 + 6*4 + 2*4 bytes of data.
  EXPECT_EQ(bytes.size(), 8 + header_len + 157);
}

TEST(Safetensors, ReadsTimmFixture) {
  Metadata meta{{"stale", "entry"}};
  StateDict state = read_safetensors(fixture_path(), &meta);
  ASSERT_EQ(state.size(), 32u);
  EXPECT_EQ(meta.size(), 1u) << "the fixture has no __metadata__";
  auto keys = state.keys();
  EXPECT_EQ(keys.front(), "cls_token");
  EXPECT_EQ(keys[1], "pos_embed");
  EXPECT_EQ(keys.back(), "head.bias");
  EXPECT_EQ(state["pos_embed"].sizes(), (std::vector<int64_t>{1, 65, 64}));
  EXPECT_EQ(state["blocks.0.attn.qkv.weight"].sizes(), (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(state["patch_embed.proj.weight"].sizes(), (std::vector<int64_t>{64, 3, 4, 4}));
  EXPECT_EQ(state["blocks.1.mlp.fc2.weight"].sizes(), (std::vector<int64_t>{64, 256}));
  EXPECT_EQ(state["head.weight"].sizes(), (std::vector<int64_t>{10, 64}));
  for (const auto& item : state) {
    EXPECT_EQ(item.value().scalar_type(), torch::kFloat32) << item.key();
  }
  // Reference values computed with numpy from the same file.
  EXPECT_FLOAT_EQ(state["cls_token"][0][0][0].item<float>(), -0.005117951892316341f);
  EXPECT_FLOAT_EQ(state["head.bias"][3].item<float>(), 0.03575759753584862f);
  EXPECT_NEAR(state["pos_embed"].to(torch::kFloat64).sum().item<double>(), -0.6282677152285032, 1e-9);
}

TEST(Safetensors, WritingFixtureBackIsByteIdentical) {
  TempDir dir;
  StateDict state = read_safetensors(fixture_path());
  const std::string path = dir.file("copy.safetensors");
  write_safetensors(path, state);
  EXPECT_EQ(read_file_bytes(path), read_file_bytes(fixture_path()));

  StateDict back = read_safetensors(path);
  ASSERT_EQ(back.keys(), state.keys());
  for (const auto& item : state) {
    EXPECT_TRUE(torch::equal(back[item.key()], item.value())) << item.key();
  }
}

TEST(Safetensors, ReadTensorsOwnTheirMemory) {
  TempDir dir;
  const std::string path = dir.file("own.safetensors");
  StateDict state;
  state.insert("a", torch::arange(4, torch::kFloat32));
  state.insert("b", torch::arange(4, torch::kFloat32) + 10);
  write_safetensors(path, state);
  StateDict back = read_safetensors(path);
  back["a"].add_(1);  // must not disturb its neighbour in the file buffer
  EXPECT_TRUE(torch::equal(back["b"], state["b"]));
  EXPECT_TRUE(torch::equal(back["a"], state["a"] + 1));
}

TEST(Safetensors, TruncatedFileNamesPathAndTensor) {
  TempDir dir;
  auto bytes = read_file_bytes(fixture_path());
  const std::string path = dir.file("truncated.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  // The first tensor past the cut is named.
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "out of range", "'blocks."}));

  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), 5);
  }
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "truncated"}));
}

TEST(Safetensors, HeaderLengthBeyondFileSize) {
  TempDir dir;
  const std::string path = dir.file("long_header.safetensors");
  write_raw(path, "{}", "", /*header_len_override=*/1000);
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "header length 1000"}));
}

TEST(Safetensors, GarbageJson) {
  TempDir dir;
  const std::string path = dir.file("garbage.safetensors");
  write_raw(path, "{\"w\": {\"dtype\": \"F32\",, garbage", "");
  EXPECT_TRUE(
      throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "invalid safetensors header JSON"}));

  write_raw(path, "[1, 2]", "");
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {"must be a JSON object"}));
}

TEST(Safetensors, DeeplyNestedHeaderIsAnErrorNotACrash) {
  // 200k-deep nesting in __metadata__ (a 400 kB header) crashed the reader's recursion before.
  moejet::testing::TempDir dir;
  const std::string path = dir.file("deep.safetensors");
  const int n = 200000;
  write_raw(path, R"({"__metadata__": )" + std::string(n, '[') + std::string(n, ']') + "}", "");
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {"nested deeper"}));
}

TEST(Safetensors, DataOffsetsOutOfRange) {
  TempDir dir;
  const std::string path = dir.file("offsets.safetensors");
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", std::string(4, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "'w'", "out of range"}));

  write_raw(path, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", std::string(8, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {"'w'"}));
}

TEST(Safetensors, UnknownDtype) {
  TempDir dir;
  const std::string path = dir.file("dtype.safetensors");
  write_raw(path, R"({"w8": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "'w8'", "F8_E4M3"}));
}

TEST(Safetensors, ShapeDisagreesWithByteRange) {
  TempDir dir;
  const std::string path = dir.file("shape.safetensors");
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", std::string(8, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "'w'", "needs 12 bytes"}));

  // A product that overflows 64 bits must not wrap around into a plausible size.
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", "");
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {"more than 2^64"}));
}

TEST(Safetensors, NegativeDimensionAndMissingFields) {
  TempDir dir;
  const std::string path = dir.file("neg.safetensors");
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "'w'", "negative"}));

  write_raw(path, R"({"w": {"dtype": "F32", "shape": [1]}})", std::string(4, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {"'w'", "data_offsets"}));
}

TEST(Safetensors, OverlappingAndDuplicateTensors) {
  TempDir dir;
  const std::string path = dir.file("overlap.safetensors");
  write_raw(path,
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
            R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
            std::string(12, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {path, "overlap"}));

  write_raw(path,
            R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
            R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
            std::string(8, '\0'));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { read_safetensors(path); }, {"'a' appears twice"}));
}

TEST(Safetensors, FailedWriteLeavesOldFileIntact) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  StateDict good;
  good.insert("w", torch::arange(3, torch::kFloat32));
  write_safetensors(path, good);
  const auto before = read_file_bytes(path);

  StateDict bad;
  bad.insert("ok", torch::ones({2}));
  bad.insert("c", torch::ones({2}, torch::kComplexFloat));
  EXPECT_TRUE(throws_error<CheckpointError>([&] { write_safetensors(path, bad); }, {"'c'", path}));

  EXPECT_EQ(read_file_bytes(path), before);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"model.safetensors"}) << "temp file left behind";
  EXPECT_TRUE(torch::equal(read_safetensors(path)["w"], good["w"]));
}

TEST(Safetensors, MissingFileNamesPath) {
  EXPECT_TRUE(throws_error<CheckpointError>([] { read_safetensors("/nonexistent/dir/x.safetensors"); },
                                            {"/nonexistent/dir/x.safetensors"}));
}

}  // namespace
}  // namespace moejet::io
