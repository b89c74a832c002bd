// Train-step throughput of dense ViTs (forward + backward + the trainer's AdamW step), in
// images/s, timed by the same train::TimedTrainStep as `moejet bench`.
// Reference points measured with Python timm on the same 2-core machine and kernels:
// ViT-T/16 at 224, batch 32: 14 img/s; 6x192 patch-4 Fashion-MNIST ViT, batch 128: 154 img/s.
// And the paper's V-JetMoE-T against the dense ViT-T, steps interleaved in one run, with their
// ratio (issue 3's target: <= 1.3 on CPU). `moejet bench` prints the same with phase times.
//
//   OPENBLAS_THREAD_TIMEOUT=16 build/bench/moejet_bench --benchmark_filter=TrainStep --benchmark_min_time=5
//
// (The moejet CLI sets that OpenBLAS variable itself; see include/moejet/core/blas_runtime.h.)

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <string>

#include "moejet/core/heap.h"
#include "moejet/core/json_util.h"
#include "moejet/models/model_config.h"
#include "moejet/models/vit.h"
#include "moejet/train/step_timing.h"

using namespace moejet;

namespace {

// Same heap policy as the moejet commands, so that the figures match `moejet bench`.
const bool kHeapKept = moejet::keep_freed_memory_in_process();

train::TimedTrainStep make_step(const std::string& name, const models::ModelConfig& cfg, int64_t batch) {
  torch::manual_seed(0);
  train::TimedTrainStep step(name, models::make_model(cfg), torch::kCPU);
  step.set_batch(batch);
  step.step();  // warm-up: allocator and oneDNN primitive caches
  return step;
}

void train_step_bench(benchmark::State& state, const models::ModelConfig& cfg) {
  const int64_t batch = state.range(0);
  auto step = make_step("model", cfg, batch);
  for (auto _ : state) {
    benchmark::DoNotOptimize(step.step().total);
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["img_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
}

void BM_ViT_Tiny224_TrainStep(benchmark::State& state) {
  train_step_bench(state, models::vit_preset("vit_tiny_patch16_224"));
}
BENCHMARK(BM_ViT_Tiny224_TrainStep)->Arg(32)->ArgName("batch")->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ViT_FashionMnist_6x192_Patch4_TrainStep(benchmark::State& state) {
  models::VitConfig cfg;
  cfg.img_size = 28;
  cfg.patch_size = 4;
  cfg.in_chans = 1;
  cfg.num_classes = 10;
  cfg.embed_dim = 192;
  cfg.depth = 6;
  cfg.num_heads = 3;
  train_step_bench(state, cfg);
}
BENCHMARK(BM_ViT_FashionMnist_6x192_Patch4_TrainStep)
    ->Arg(128)
    ->ArgName("batch")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

models::ModelConfig paper_model(const std::string& name) {
  return models::model_config_from_json(
      read_json_file(std::string(MOEJET_SOURCE_DIR) + "/configs/paper/" + name + ".json"));
}

// Each iteration is one dense ViT-T step and one V-JetMoE-T step; counters are the medians and
// their ratio (the time per iteration is their sum).
void BM_VJetMoeTiny_vs_ViTTiny_TrainStep(benchmark::State& state) {
  const int64_t batch = state.range(0);
  auto dense = make_step("vit_tiny", paper_model("vit_tiny"), batch);
  auto moe = make_step("vjetmoe_tiny", paper_model("vjetmoe_tiny"), batch);
  train::StepSamples dense_s, moe_s;
  for (auto _ : state) {
    dense_s.steps.push_back(dense.step());
    moe_s.steps.push_back(moe.step());
  }
  state.counters["dense_s"] = dense_s.median().total;
  state.counters["moe_s"] = moe_s.median().total;
  state.counters["ratio"] = moe_s.median().total / dense_s.median().total;
}
BENCHMARK(BM_VJetMoeTiny_vs_ViTTiny_TrainStep)
    ->Arg(32)
    ->Arg(64)
    ->ArgName("batch")
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(5);

}  // namespace
