// The library reports progress to the reporter its caller provides, and to nothing else.

#include <gtest/gtest.h>

#include "moejet/core/progress.h"

using namespace moejet;

TEST(Progress, WithoutAReporterNothingIsWrittenAndTheTerminalBarEndsWithItsCount) {
  ::testing::internal::CaptureStderr();
  {
    auto task = start_progress(nullptr, "silent", 10, "img");
    task->advance(4, "loss 1.0");
    task->finish("done");
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");

  TerminalProgress terminal;
  ::testing::internal::CaptureStderr();
  {
    auto task = start_progress(&terminal, "epoch 1/2", 10, "batch");
    task->advance(10, "loss 0.5");
    task->finish();
    task->finish();  // once only
  }
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("epoch 1/2"), std::string::npos) << out;
  EXPECT_NE(out.find("10/10"), std::string::npos) << out;
  EXPECT_NE(out.find("loss 0.5"), std::string::npos) << out;
  EXPECT_EQ(out.find("epoch 1/2"), out.rfind("epoch 1/2")) << "finished twice: " << out;
}
