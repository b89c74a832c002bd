#include <gtest/gtest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // ctest runs test processes side by side; one intra-op thread each keeps 2 cores from thrashing.
  torch::set_num_threads(1);
  torch::manual_seed(0);
  return RUN_ALL_TESTS();
}
