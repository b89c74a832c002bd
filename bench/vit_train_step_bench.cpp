// Train-step throughput of dense ViTs (forward + backward + AdamW step), in images/s.
// Reference points measured with Python timm on the same 2-core machine and kernels:
// ViT-T/16 at 224, batch 32: 14 img/s; 6x192 patch-4 Fashion-MNIST ViT, batch 128: 154 img/s.
//
//   build/bench/moejet_bench --benchmark_filter=ViT --benchmark_min_time=5

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "moejet/core/heap.h"
#include "moejet/models/vit.h"
#include "moejet/train/trainer.h"

using namespace moejet;

namespace {

// Same heap policy as the moejet commands, so that the figures match `moejet bench`.
const bool kHeapKept = moejet::keep_freed_memory_in_process();

void train_step_bench(benchmark::State& state, models::VitConfig cfg, int64_t batch) {
  torch::manual_seed(0);
  models::VisionTransformer model(cfg);
  model->train();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.05));
  auto x = torch::randn({batch, cfg.in_chans, cfg.img_size, cfg.img_size});
  auto y = torch::one_hot(torch::randint(cfg.num_classes, {batch}), cfg.num_classes).to(torch::kFloat);
  // One warm-up step: allocator and oneDNN primitive caches.
  auto step = [&] {
    opt.zero_grad();
    auto loss = train::soft_target_cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    return loss.item<float>();
  };
  step();
  for (auto _ : state) {
    benchmark::DoNotOptimize(step());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["img_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * batch),
                                                   benchmark::Counter::kIsRate);
}

void BM_ViT_Tiny224_TrainStep(benchmark::State& state) {
  auto cfg = models::vit_preset("vit_tiny_patch16_224");
  train_step_bench(state, cfg, state.range(0));
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
  train_step_bench(state, cfg, state.range(0));
}
BENCHMARK(BM_ViT_FashionMnist_6x192_Patch4_TrainStep)
    ->Arg(128)
    ->ArgName("batch")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
