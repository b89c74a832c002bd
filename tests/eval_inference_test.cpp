#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/json_util.h"
#include "moejet/eval/inference_timing.h"
#include "moejet/models/model_config.h"
#include "test_util.h"

namespace {

using namespace moejet;

models::ModelPtr small_sphero_vit() {
  json j = read_json_file(std::string(MOEJET_SOURCE_DIR) + "/configs/vit_fmnist_sphero.json")["model"];
  j["depth"] = 4;
  j["moe"]["layers"] = {2, 3};
  torch::manual_seed(0);
  return models::make_model(models::model_config_from_json(j));
}

TEST(InferenceTiming, QuantilesAreNearestRank) {
  EXPECT_DOUBLE_EQ(eval::quantile({4, 1, 3, 2}, 0.5), 2);
  EXPECT_DOUBLE_EQ(eval::quantile({4, 1, 3, 2}, 0.9), 4);
  EXPECT_DOUBLE_EQ(eval::quantile({4, 1, 3, 2}, 0.0), 1);
  EXPECT_DOUBLE_EQ(eval::quantile({7}, 0.9), 7);
  EXPECT_THROW(eval::quantile({}, 0.5), c10::Error);
}

// Reproduces a crash: the SpheroMoE layer's kernels split rows over their own threads, which did
// not inherit InferenceMode and threw when writing inference tensors ("Inplace update to
// inference tensor outside InferenceMode").
TEST(InferenceTiming, MoeModelsRunUnderInferenceModeAsUnderNoGrad) {
  // Two threads, and 128 images: the dispatch softmax's 128 x 24 rows of 16 are enough to split.
  moejet::testing::ScopedTorchThreads threads(2);
  auto model = small_sphero_vit();
  model->eval();
  auto x = torch::randn({128, 1, 28, 28});
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = model->forward(x);
  }
  torch::Tensor inferred;
  {
    torch::InferenceMode inference;
    inferred = model->forward(x);
  }
  EXPECT_TRUE(torch::equal(inferred, reference));
}

TEST(InferenceTiming, TimesEvalForwardsInTheGivenPrecision) {
  auto model = small_sphero_vit();
  model->train();
  eval::TimedInference timer(*model, torch::kCPU, kernels::Precision::fp32);
  EXPECT_THROW(timer.forward(), c10::Error);  // no batch yet
  timer.set_batch(2);
  EXPECT_GT(timer.forward(), 0.0);
  EXPECT_FALSE(model->is_training());
  if (!kernels::bf16_native(torch::kCPU)) {
    EXPECT_THROW(eval::TimedInference(*model, torch::kCPU, kernels::Precision::bf16), ConfigError);
  }
}

}  // namespace
