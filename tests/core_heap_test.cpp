#include <malloc.h>
#include <stdlib.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/heap.h"

TEST(Heap, OptOutLeavesMallocAlone) {
  setenv("MOEJET_KEEP_HEAP", "0", 1);
  EXPECT_FALSE(moejet::keep_freed_memory_in_process());
  unsetenv("MOEJET_KEEP_HEAP");
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
TEST(Heap, LargeTensorsComeFromTheHeapNotFromMmap) {
  ASSERT_TRUE(moejet::keep_freed_memory_in_process());
  const auto before = mallinfo2();
  auto t = torch::empty({16, 1024, 1024});  // 64 MiB: glibc would mmap (and later unmap) this
  const auto during = mallinfo2();
  EXPECT_EQ(during.hblkhd, before.hblkhd) << "a 64 MiB tensor was mmap-ed";
  EXPECT_GE(during.arena, before.arena + t.nbytes());
  t = torch::Tensor();
  const auto after = mallinfo2();
  EXPECT_GE(after.arena, before.arena + 64u * 1024 * 1024) << "the freed block went back to the OS";
}
#endif
