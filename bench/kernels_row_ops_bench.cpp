// kernels::l2_normalize and kernels::row_softmax against the torch ops they replace, forward and
// backward, on a SpheroMoE layer of V-JetMoE-T at batch 32: keys [32, 196, 192], dispatch logits
// [32, 294, 196]. The AfterProduct pair runs the main job's Soft MoE softmax ([128, 16, 16])
// right after the matrix product that makes its logits, as a layer does: the product's threads
// are then still spinning, and a kernel that started threads of its own waited for a core (up to
// 12 ms where microseconds do).
//
//   build/bench/moejet_bench --benchmark_filter=RowOps

#include <torch/torch.h>

#include "bench_util.h"
#include "moejet/kernels/matmul.h"
#include "moejet/kernels/row_ops.h"

namespace {

namespace F = torch::nn::functional;

template <class Fn>
void forward_backward(benchmark::State& state, std::vector<int64_t> shape, const Fn& fn) {
  torch::manual_seed(0);
  auto x = torch::randn(shape).requires_grad_();
  auto w = torch::randn(shape);
  for (auto _ : state) {
    x.mutable_grad() = torch::Tensor();
    (fn(x) * w).sum().backward();
    benchmark::DoNotOptimize(x.grad().data_ptr<float>());
  }
  // Read x and w, write y; read the gradient and y, write dx: five passes over the tensor.
  moejet::bench::set_bandwidth(state, 5 * x.numel() * static_cast<int64_t>(sizeof(float)));
}

const std::vector<int64_t> kKeys{32, 196, 192}, kDispatch{32, 294, 196};

void BM_RowOps_L2Normalize_Ours(benchmark::State& s) {
  forward_backward(s, kKeys, [](const torch::Tensor& x) { return moejet::kernels::l2_normalize(x, 1e-6); });
}
void BM_RowOps_L2Normalize_Torch(benchmark::State& s) {
  forward_backward(s, kKeys, [](const torch::Tensor& x) { return F::normalize(x, F::NormalizeFuncOptions().dim(-1)); });
}
void BM_RowOps_Softmax_Ours(benchmark::State& s) {
  forward_backward(s, kDispatch, [](const torch::Tensor& x) { return moejet::kernels::row_softmax(x); });
}
void BM_RowOps_Softmax_Torch(benchmark::State& s) {
  forward_backward(s, kDispatch, [](const torch::Tensor& x) { return torch::softmax(x, -1); });
}
template <class Fn>
void after_product(benchmark::State& state, const Fn& softmax) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  auto x = torch::randn({128, 16, 192}), q = torch::randn({192, 16});
  for (auto _ : state) {
    torch::Tensor p = softmax(moejet::kernels::matmul(x, q));
    benchmark::DoNotOptimize(p.data_ptr<float>());
  }
}
void BM_RowOps_SoftmaxAfterProduct_Ours(benchmark::State& s) {
  after_product(s, [](const torch::Tensor& x) { return moejet::kernels::row_softmax(x); });
}
void BM_RowOps_SoftmaxAfterProduct_Torch(benchmark::State& s) {
  after_product(s, [](const torch::Tensor& x) { return torch::softmax(x, -1); });
}

BENCHMARK(BM_RowOps_SoftmaxAfterProduct_Ours)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_RowOps_SoftmaxAfterProduct_Torch)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_RowOps_L2Normalize_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RowOps_L2Normalize_Torch)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RowOps_Softmax_Ours)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RowOps_Softmax_Torch)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
