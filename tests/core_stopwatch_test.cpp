#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "moejet/core/error.h"
#include "moejet/core/stopwatch.h"

TEST(Stopwatch, MedianSecondsLeavesOutTheFirstCallAndOneSidedOutliers) {
  // The first call (untimed) and one timed call in five are slow; the median is a fast call's.
  int calls = 0;
  const double seconds = moejet::median_seconds(
      [&] {
        if (calls == 0 || calls == 3) {
          std::this_thread::sleep_for(std::chrono::milliseconds(300));
        }
        ++calls;
      },
      5, false);
  EXPECT_EQ(calls, 6);
  EXPECT_GE(seconds, 0.0);
  EXPECT_LT(seconds, 0.15);
  // With every timed call slow, the median is a slow call's.
  const double slow =
      moejet::median_seconds([] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }, 3, false);
  EXPECT_GE(slow, 0.02);
  EXPECT_THROW(moejet::median_seconds([] {}, 0, false), moejet::Error);
}
