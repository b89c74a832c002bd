#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/io/state_dict.h"
#include "test_util.h"

namespace moejet::io {
namespace {

using moejet::testing::throws_error;

// A root with its own parameter and buffer registered around its children, to pin down the
// PyTorch state_dict() order (own parameters, own buffers, then children).
struct TinyNet : torch::nn::Module {
  explicit TinyNet(int64_t classes = 4) {
    cls_token = register_parameter("cls_token", torch::zeros({1, 1, 3}));
    blocks = register_module("blocks", torch::nn::ModuleList(torch::nn::Linear(3, 2)));
    register_buffer("scale", torch::ones({2}));
    head = register_module("head", torch::nn::Linear(2, classes));
  }
  torch::Tensor cls_token;
  torch::nn::ModuleList blocks;
  torch::nn::Linear head{nullptr};
};

const std::vector<std::string> kKeys = {"cls_token",     "scale",       "blocks.0.weight",
                                        "blocks.0.bias", "head.weight", "head.bias"};

// A checkpoint for TinyNet whose every value differs from a fresh model's.
StateDict checkpoint_for(int64_t classes = 4) {
  TinyNet other(classes);
  StateDict state;
  float v = 1;
  for (const auto& item : module_state_dict(other)) {
    state.insert(item.key(), torch::full(item.value().sizes(), v++));
  }
  return state;
}

// Loads `s` into `m`, which must throw CheckpointError, and returns the message (for a test that
// checks what the message must not contain).
std::string load_error(torch::nn::Module& m, const StateDict& s, const LoadOptions& o = {}) {
  try {
    load_state_dict(m, s, o, "ckpt.safetensors");
  } catch (const CheckpointError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a CheckpointError";
  return "";
}

TEST(StateDict, ModuleStateDictHasTorchOrderAndIsDetached) {
  TinyNet net;
  StateDict state = module_state_dict(net);
  EXPECT_EQ(state.keys(), kKeys);
  EXPECT_EQ(state["blocks.0.weight"].sizes(), (std::vector<int64_t>{2, 3}));
  for (const auto& item : state) {
    EXPECT_FALSE(item.value().requires_grad()) << item.key();
  }
  // Detached, not copied: the entries alias the module's tensors.
  EXPECT_EQ(state["head.weight"].data_ptr(), net.head->weight.data_ptr());
}

TEST(StateDict, LoadCopiesEveryValue) {
  TinyNet net;
  StateDict state = checkpoint_for();
  // A float64 checkpoint entry is converted to the model's float32.
  state["head.bias"] = state["head.bias"].to(torch::kFloat64);
  LoadReport report = load_state_dict(net, state);
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.loaded, kKeys);
  EXPECT_TRUE(report.missing.empty() && report.unexpected.empty() && report.dropped.empty());
  EXPECT_EQ(net.head->bias.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(net.head->bias.requires_grad());
  StateDict after = module_state_dict(net);
  for (const auto& item : state) {
    EXPECT_TRUE(moejet::testing::all_close(after[item.key()], item.value().to(torch::kFloat32), 0, 0)) << item.key();
  }
  EXPECT_NE(report.summary().find("loaded 6"), std::string::npos) << report.summary();
}

TEST(StateDict, IntegerDataForFloatWeightsIsAnErrorAndNonFiniteWeightsAreReported) {
  TinyNet net;
  const auto before = module_state_dict(net)["head.weight"].clone();
  StateDict state = checkpoint_for();
  // The bytes of F32 values read back through an I32 label: copy_ would load 1065353216.0 for 1.0.
  state["head.weight"] = state["head.weight"].view(torch::kInt32);
  EXPECT_TRUE(
      throws_error<CheckpointError>([&] { load_state_dict(net, state, {}, "ckpt.safetensors"); },
                                    {"dtype mismatch: head.weight: the model holds Float but the checkpoint Int"}));
  EXPECT_TRUE(torch::equal(module_state_dict(net)["head.weight"], before)) << "nothing is copied";

  // NaN weights load (inspecting a diverged run is legitimate), and the report names them.
  state = checkpoint_for();
  state["blocks.0.bias"][1] = std::nan("");
  auto report = load_state_dict(net, state);
  EXPECT_EQ(report.non_finite, (std::vector<std::string>{"blocks.0.bias"}));
}

TEST(StateDict, ReportsEveryProblemAtOnceAndLeavesModelUntouched) {
  TinyNet net;
  auto before = module_state_dict(net)["blocks.0.bias"].clone();
  StateDict good = checkpoint_for();
  StateDict state;
  for (const auto& item : good) {
    if (item.key() == "head.bias") {
      continue;  // missing
    }
    if (item.key() == "blocks.0.weight") {
      state.insert(item.key(), item.value().t().contiguous());  // [3, 2] instead of [2, 3]
    } else {
      state.insert(item.key(), item.value());
    }
  }
  state.insert("extra.weight", torch::ones({5}));  // unexpected

  EXPECT_TRUE(
      throws_error<CheckpointError>([&] { load_state_dict(net, state, {}, "ckpt.safetensors"); },
                                    {"ckpt.safetensors", "3 problems", "blocks.0.weight: expected [2, 3], got [3, 2]",
                                     "missing in checkpoint: head.bias", "unexpected (not in model): extra.weight"}));
  EXPECT_TRUE(torch::equal(module_state_dict(net)["blocks.0.bias"], before)) << "a failed load must not copy anything";
}

TEST(StateDict, AllowMissingAndUnexpected) {
  TinyNet net;
  StateDict good = checkpoint_for();
  StateDict state;
  for (const auto& item : good) {
    if (item.key() != "scale") {
      state.insert(item.key(), item.value());
    }
  }
  state.insert("extra", torch::ones({1}));

  // Each option only covers its own kind of problem.
  LoadOptions only_unexpected;
  only_unexpected.allow_unexpected = true;
  std::string msg = load_error(net, state, only_unexpected);
  EXPECT_NE(msg.find("missing in checkpoint: scale"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("extra"), std::string::npos) << msg;

  LoadOptions only_missing;
  only_missing.allow_missing = true;
  msg = load_error(net, state, only_missing);
  EXPECT_NE(msg.find("unexpected (not in model): extra"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("scale"), std::string::npos) << msg;

  LoadOptions both;
  both.allow_missing = true;
  both.allow_unexpected = true;
  LoadReport report = load_state_dict(net, state, both);
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.missing, std::vector<std::string>{"scale"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra"});
  EXPECT_EQ(report.loaded.size(), 5u);
  EXPECT_TRUE(torch::equal(net.head->weight, good["head.weight"]));
  EXPECT_TRUE(torch::equal(module_state_dict(net)["scale"], torch::ones({2})));
  EXPECT_NE(report.summary().find("1 missing (scale)"), std::string::npos) << report.summary();
  EXPECT_NE(report.summary().find("1 unexpected (extra)"), std::string::npos) << report.summary();
}

TEST(StateDict, DropOnMismatchSkipsHeadOnly) {
  TinyNet net(/*classes=*/4);
  auto head_before = net.head->weight.detach().clone();
  StateDict state = checkpoint_for(/*classes=*/10);  // a 10-class head

  LoadOptions opts;
  opts.drop_on_mismatch = {"head."};
  LoadReport report = load_state_dict(net, state, opts);
  EXPECT_EQ(report.dropped, (std::vector<std::string>{"head.weight", "head.bias"}));
  EXPECT_EQ(report.loaded, (std::vector<std::string>{"cls_token", "scale", "blocks.0.weight", "blocks.0.bias"}));
  EXPECT_TRUE(torch::equal(net.head->weight, head_before)) << "dropped keys keep their init";
  EXPECT_TRUE(torch::equal(net.blocks[0]->as<torch::nn::Linear>()->weight, state["blocks.0.weight"]));
  EXPECT_NE(report.summary().find("2 dropped (head.weight, head.bias)"), std::string::npos) << report.summary();

  // Without the option the head is a shape error; a mismatch outside the prefix still is one.
  EXPECT_TRUE(throws_error<CheckpointError>(
      [&] { load_state_dict(net, state, {}, "ckpt.safetensors"); },
      {"head.weight: expected [4, 2], got [10, 2]", "head.bias: expected [4], got [10]"}));
  state["cls_token"] = torch::zeros({1, 1, 7});
  std::string msg = load_error(net, state, opts);
  EXPECT_NE(msg.find("cls_token: expected [1, 1, 3], got [1, 1, 7]"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("head."), std::string::npos) << msg;
}

}  // namespace
}  // namespace moejet::io
