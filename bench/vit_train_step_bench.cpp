// Train-step throughput of dense ViTs (forward + backward + AdamW step), in images/s.
// Reference points measured with Python timm on the same 2-core machine and kernels:
// ViT-T/16 at 224, batch 32: 14 img/s; 6x192 patch-4 Fashion-MNIST ViT, batch 128: 154 img/s.
// And the paper's V-JetMoE-T against the dense ViT-T, steps interleaved in one run, with their
// ratio (issue 3's target: <= 1.3 on CPU). `moejet bench` prints the same with phase times.
//
//   OPENBLAS_THREAD_TIMEOUT=16 build/bench/moejet_bench --benchmark_min_time=5
//
// (The moejet CLI sets that OpenBLAS variable itself; see include/moejet/core/blas.h.)

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "moejet/core/heap.h"
#include "moejet/core/json_util.h"
#include "moejet/models/model_config.h"
#include "moejet/models/vit.h"
#include "moejet/train/optimizer.h"
#include "moejet/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

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
  state.counters["img_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
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

// One model of configs/paper with the trainer's optimizer, stepped on a fixed random batch.
struct PaperModel {
  explicit PaperModel(const std::string& name, int64_t batch) {
    torch::manual_seed(0);
    const auto cfg = models::model_config_from_json(
        read_json_file(std::string(MOEJET_SOURCE_DIR) + "/configs/paper/" + name + ".json"));
    model = models::make_model(cfg);
    model->train();
    for (auto& entry : model->moe_layer_list) {
      entry.second->collect_stats = false;
    }
    opt = train::make_optimizer(*model, train::OptimConfig{});
    const auto& v = cfg.vit;
    x = torch::randn({batch, v.in_chans, v.img_size, v.img_size});
    y = torch::one_hot(torch::randint(v.num_classes, {batch}), v.num_classes).to(torch::kFloat);
  }
  double step() {
    const auto t0 = std::chrono::steady_clock::now();
    train::clear_grads(*opt.optimizer);
    auto loss = train::soft_target_cross_entropy(model->forward(x), y);
    if (auto aux = model->moe_aux_loss(); aux.defined()) {
      loss = loss + aux;
    }
    loss.backward();
    opt.optimizer->step();
    benchmark::DoNotOptimize(loss.item<float>());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  models::ModelPtr model;
  train::OptimizerBundle opt;
  torch::Tensor x, y;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Each iteration is one dense ViT-T step and one V-JetMoE-T step; counters are the medians and
// their ratio (the time per iteration is their sum).
void BM_VJetMoeTiny_vs_ViTTiny_TrainStep(benchmark::State& state) {
  const int64_t batch = state.range(0);
  PaperModel dense("vit_tiny", batch), moe("vjetmoe_tiny", batch);
  dense.step();  // warm-up: allocator and oneDNN primitive caches
  moe.step();
  std::vector<double> dense_s, moe_s;
  for (auto _ : state) {
    dense_s.push_back(dense.step());
    moe_s.push_back(moe.step());
  }
  state.counters["dense_s"] = median(dense_s);
  state.counters["moe_s"] = median(moe_s);
  state.counters["ratio"] = median(moe_s) / median(dense_s);
}
BENCHMARK(BM_VJetMoeTiny_vs_ViTTiny_TrainStep)
    ->Arg(32)
    ->Arg(64)
    ->ArgName("batch")
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(5);

}  // namespace
