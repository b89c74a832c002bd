#include "moejet/kernels/bf16_weights.h"

#include <mutex>
#include <unordered_map>

#include <c10/util/intrusive_ptr.h>
#include <torch/torch.h>

#include "moejet/kernels/bf16_cast.h"

namespace moejet::kernels {

namespace {

struct Copy {
  // Weak: the parameter may be freed while its copy is kept. It also keeps the TensorImpl's memory
  // from being reused, so that a later tensor at the same address cannot be taken for this one.
  c10::weak_intrusive_ptr<c10::TensorImpl> owner{c10::intrusive_ptr<c10::TensorImpl>()};
  const void* data = nullptr;
  int64_t version = -1;
  torch::Tensor bf16;
};

struct Cache {
  std::mutex mu;
  std::unordered_map<const c10::TensorImpl*, Copy> copies;
  size_t conversions = 0;
};

Cache& cache() {
  static auto* c = new Cache();  // never destroyed: parameters may outlive static destruction
  return *c;
}

bool cacheable(const torch::Tensor& w) {
  return w.defined() && w.scalar_type() == torch::kFloat && w.is_cpu() && w.is_contiguous() && w.is_leaf() &&
         w.requires_grad() && !w.is_inference();
}

// The copy may be written in place for p: it has p's sizes, and no tensor handed out still shares
// its storage (an autograd graph that saved it), whose values must not change under it.
bool writable_for(const Copy& copy, const torch::Tensor& p) {
  return copy.bf16.defined() && copy.bf16.sizes() == p.sizes() && copy.bf16.storage().use_count() == 1 &&
         copy.bf16.use_count() == 1;
}

torch::Tensor convert_now(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  return to_bf16(w);
}

}  // namespace

torch::Tensor bf16_weight(const torch::Tensor& w) {
  if (!cacheable(w)) {
    return convert_now(w);
  }
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const auto* impl = w.unsafeGetTensorImpl();
  auto it = c.copies.find(impl);
  if (it != c.copies.end() && it->second.data == w.data_ptr() && it->second.version == w._version() &&
      it->second.bf16.sizes() == w.sizes()) {
    // A new TensorImpl on the same storage: whoever saves it for backward holds its own reference,
    // which the next conversion in place checks for.
    return it->second.bf16.variable_data();
  }
  ++c.conversions;
  // A miss is the time to drop the copies of parameters that are gone.
  for (auto dead = c.copies.begin(); dead != c.copies.end();) {
    dead = dead->second.owner.expired() ? c.copies.erase(dead) : std::next(dead);
  }
  auto& copy = c.copies[impl];
  torch::NoGradGuard no_grad;
  if (!writable_for(copy, w)) {
    copy.bf16 = torch::empty(w.sizes(), w.options().dtype(torch::kBFloat16));
  }
  to_bf16_into(w, copy.bf16);
  copy.owner = c10::weak_intrusive_ptr<c10::TensorImpl>(w.getIntrusivePtr());
  copy.data = w.data_ptr();
  copy.version = w._version();
  return copy.bf16.variable_data();
}

uint16_t* bf16_weight_to_write(const torch::Tensor& p) {
  if (!cacheable(p)) {
    return nullptr;
  }
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.copies.find(p.unsafeGetTensorImpl());
  if (it == c.copies.end()) {
    return nullptr;
  }
  auto& copy = it->second;
  if (copy.data != p.data_ptr() || !writable_for(copy, p)) {
    return nullptr;
  }
  copy.version = -1;  // stale until bf16_weight_written
  return reinterpret_cast<uint16_t*>(copy.bf16.data_ptr());
}

void bf16_weight_written(const torch::Tensor& p) {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.copies.find(p.unsafeGetTensorImpl());
  if (it != c.copies.end() && it->second.data == p.data_ptr()) {
    it->second.version = p._version();
  }
}

Bf16WeightCacheStats bf16_weight_cache_stats() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  Bf16WeightCacheStats s;
  s.conversions = c.conversions;
  for (const auto& [impl, copy] : c.copies) {
    if (!copy.owner.expired()) {
      ++s.copies;
      s.bytes += copy.bf16.nbytes();
    }
  }
  return s;
}

void clear_bf16_weights() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.copies.clear();
}

}  // namespace moejet::kernels
