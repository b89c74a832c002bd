#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "moejet/kernels/matmul.h"
#include "moejet/kernels/precision.h"
#include "moejet/kernels/product_floor.h"

namespace {

using moejet::kernels::ProductCall;
using moejet::kernels::ProductRecorder;

double total_flops(const std::vector<ProductCall>& calls) {
  double f = 0;
  for (const auto& c : calls) {
    f += c.flops();
  }
  return f;
}

// A Linear layer's step is three products of 2 M K N flops each: forward, the input's gradient
// and the weight's, whichever kernel runs them (oneDNN, or ATen with its autograd backward).
void expect_linear_step_recorded(moejet::kernels::Precision p) {
  torch::manual_seed(0);
  const int64_t M = 24, K = 16, N = 12;
  auto x = torch::randn({2, M / 2, K}, torch::requires_grad());
  auto w = torch::randn({N, K}, torch::requires_grad());
  auto b = torch::randn({N}, torch::requires_grad());
  std::vector<ProductCall> calls;
  {
    moejet::kernels::PrecisionScope scope(p);
    ProductRecorder recorder;
    moejet::kernels::linear(x, w, b).sum().backward();
    calls = recorder.calls();
  }
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_DOUBLE_EQ(total_flops(calls), 3 * 2.0 * M * K * N);
  const auto floor = moejet::kernels::product_floor(calls, 2);
  EXPECT_EQ(floor.calls, 3);
  EXPECT_EQ(floor.distinct, 3);  // three different shapes
  EXPECT_DOUBLE_EQ(floor.flops, 3 * 2.0 * M * K * N);
  EXPECT_GT(floor.seconds, 0.0);
  // Each call's own time in the step, summed beside the time alone.
  double in_step = 0;
  for (const auto& c : calls) {
    EXPECT_GT(c.seconds, 0.0) << c.key();
    in_step += c.seconds;
  }
  EXPECT_DOUBLE_EQ(floor.in_step, in_step);
  ASSERT_EQ(floor.groups.size(), 3u);
  double alone = 0;
  for (size_t i = 0; i < floor.groups.size(); ++i) {
    EXPECT_EQ(floor.groups[i].calls, 1);
    EXPECT_DOUBLE_EQ(floor.groups[i].flops, 2.0 * M * K * N);
    alone += floor.groups[i].seconds;
    if (i > 0) {  // the most time in the step first
      EXPECT_GE(floor.groups[i - 1].in_step, floor.groups[i].in_step);
    }
  }
  EXPECT_DOUBLE_EQ(floor.seconds, alone);
}

TEST(ProductFloor, RecordsEveryProductOfALinearStepInFp32) {
  expect_linear_step_recorded(moejet::kernels::Precision::fp32);
}

TEST(ProductFloor, RecordsEveryProductOfALinearStepInBf16) {
  if (!moejet::kernels::bf16_native(torch::kCPU)) {
    GTEST_SKIP() << "no native bf16 on this CPU";
  }
  expect_linear_step_recorded(moejet::kernels::Precision::bf16);
}

TEST(ProductFloor, CountsANestedProductOnceAndSeesOtherThreads) {
  const auto a = torch::randn({8, 4}), b = torch::randn({4, 6});
  std::vector<ProductCall> calls;
  {
    ProductRecorder recorder;
    {
      // A product that runs another (as onednn_matmul's reference fallback runs ATen's): only the
      // inner one did the work.
      RECORD_FUNCTION("moejet::onednn_matmul", std::vector<c10::IValue>({a, b}));
      torch::mm(a, b);
    }
    std::thread([&] { torch::mm(b.t(), a.t()); }).join();
    torch::add(a, a);  // not a product
    calls = recorder.calls();
  }
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].op, "aten::mm");
  EXPECT_EQ(calls[1].op, "aten::mm");
  EXPECT_DOUBLE_EQ(calls[0].flops(), 2.0 * 8 * 4 * 6);
  EXPECT_DOUBLE_EQ(calls[1].flops(), 2.0 * 6 * 4 * 8);
  // The transposed operands are recorded as they lay, strides and all.
  EXPECT_EQ(calls[1].operands[0].strides, (std::vector<int64_t>{1, 6}));
  EXPECT_NE(calls[0].key(), calls[1].key());
  {
    ProductRecorder fresh;  // a new recording starts empty; nothing is recorded after the last
    EXPECT_TRUE(fresh.calls().empty());
  }
  torch::mm(a, b);
}

TEST(ProductFloor, SumsEachDistinctCallTimedOnceOverItsCalls) {
  const auto a = torch::randn({64, 32}), b = torch::randn({32, 16});
  // A broadcast bias (stride 0), as linear layers hand addmm, replays from its own strides.
  const auto bias = torch::randn({16}).expand({64, 16});
  std::vector<ProductCall> calls;
  {
    ProductRecorder recorder;
    torch::mm(a, b);
    torch::mm(a, b);
    torch::addmm(bias, a, b);
    calls = recorder.calls();
  }
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].key(), calls[1].key());
  EXPECT_EQ(calls[2].operands[0].strides, (std::vector<int64_t>{0, 1}));
  const auto floor = moejet::kernels::product_floor(calls, 3);
  EXPECT_EQ(floor.calls, 3);
  EXPECT_EQ(floor.distinct, 2);
  ASSERT_EQ(floor.groups.size(), 2u);
  const auto& mm = floor.groups[0].key == calls[0].key() ? floor.groups[0] : floor.groups[1];
  EXPECT_EQ(mm.key, calls[0].key());
  EXPECT_EQ(mm.calls, 2);
  EXPECT_DOUBLE_EQ(mm.in_step, calls[0].seconds + calls[1].seconds);
  EXPECT_DOUBLE_EQ(floor.flops, 3 * 2.0 * 64 * 32 * 16);
  EXPECT_GT(floor.seconds, 0.0);
  EXPECT_THROW(moejet::kernels::product_floor(calls, 0), c10::Error);
}

TEST(ProductFloor, OneRecordingAtATime) {
  ProductRecorder recorder;
  EXPECT_THROW(ProductRecorder second, c10::Error);
}

}  // namespace
