#include "moejet/kernels/product_floor.h"

#include <ATen/record_function.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>

#include "moejet/core/stopwatch.h"
#include "moejet/kernels/onednn_matmul.h"

namespace moejet::kernels {

namespace {

// The products, and where their two multiplied operands sit among the tensor inputs.
struct ProductOp {
  const char* name;
  size_t lhs, rhs;
};
constexpr ProductOp kProducts[] = {{"aten::mm", 0, 1},
                                   {"aten::addmm", 1, 2},
                                   {"aten::bmm", 0, 1},
                                   {"aten::baddbmm", 1, 2},
                                   {"moejet::onednn_matmul", 0, 1}};

const ProductOp* product_op(const std::string& name) {
  for (const auto& p : kProducts) {
    if (name == p.name) {
      return &p;
    }
  }
  return nullptr;
}

struct Recording {
  std::mutex mu;
  std::vector<ProductCall> calls;
};
std::atomic<Recording*> g_recording{nullptr};

// A product in progress on this thread: whether another product ran inside it (then it is not
// the one that did the work).
struct Frame : at::ObserverContext {
  ProductCall call;
  bool has_inner = false;
  std::chrono::steady_clock::time_point start;
};
thread_local std::vector<Frame*> t_open;

TensorShape shape_of(const c10::IValue& v) {
  TensorShape s;
  if (!v.isTensor()) {
    return s;
  }
  const auto& t = v.toTensor();
  if (!t.defined() || t.layout() != c10::kStrided) {
    return s;
  }
  s.defined = true;
  s.sizes = t.sizes().vec();
  s.strides = t.strides().vec();
  s.dtype = t.scalar_type();
  s.device = t.device();
  return s;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  const std::string name = fn.name();
  if (product_op(name) == nullptr) {
    return nullptr;
  }
  auto frame = std::make_unique<Frame>();
  frame->call.op = name;
  for (const auto& v : fn.inputs()) {
    if (v.isTensor() || v.isNone()) {
      frame->call.operands.push_back(shape_of(v));
    } else if (v.isDouble() && name == "moejet::onednn_matmul") {
      frame->call.alpha = v.toDouble();  // its scale; ATen's beta and alpha cost nothing and are left out
    }
  }
  if (!t_open.empty()) {
    t_open.back()->has_inner = true;
  }
  t_open.push_back(frame.get());
  frame->start = std::chrono::steady_clock::now();  // last: the observer's own work is not timed
  return frame;
}

void on_end(const at::RecordFunction& /*fn*/, at::ObserverContext* ctx) {
  if (ctx == nullptr) {
    return;
  }
  auto* frame = static_cast<Frame*>(ctx);
  frame->call.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - frame->start).count();
  if (!t_open.empty() && t_open.back() == frame) {
    t_open.pop_back();
  }
  auto* rec = g_recording.load();
  const auto* op = product_op(frame->call.op);
  const auto& ops = frame->call.operands;
  const bool complete =
      op != nullptr && ops.size() > std::max(op->lhs, op->rhs) && ops[op->lhs].defined && ops[op->rhs].defined;
  if (rec != nullptr && !frame->has_inner && complete) {
    std::lock_guard<std::mutex> lock(rec->mu);
    rec->calls.push_back(frame->call);
  }
}

// Fresh operands laid out as `s`: random values in storage that covers every stride.
torch::Tensor make_operand(const TensorShape& s) {
  if (!s.defined) {
    return {};
  }
  int64_t span = 1;
  for (size_t d = 0; d < s.sizes.size(); ++d) {
    if (s.sizes[d] == 0) {
      span = 0;
      break;
    }
    span += (s.sizes[d] - 1) * std::abs(s.strides[d]);
  }
  auto base = torch::randn({std::max<int64_t>(span, 1)}, torch::TensorOptions().device(s.device)).to(s.dtype);
  return base.as_strided(s.sizes, s.strides);
}

void replay(const ProductCall& c, const std::vector<torch::Tensor>& t) {
  if (c.op == "aten::mm") {
    torch::mm(t[0], t[1]);
  } else if (c.op == "aten::addmm") {
    torch::addmm(t[0], t[1], t[2]);
  } else if (c.op == "aten::bmm") {
    torch::bmm(t[0], t[1]);
  } else if (c.op == "aten::baddbmm") {
    torch::baddbmm(t[0], t[1], t[2]);
  } else {
    // moejet::onednn_matmul records a, b, out, bias, mul (kernels/onednn_matmul.cpp).
    auto at = [&](size_t i) { return i < t.size() ? t[i] : torch::Tensor(); };
    onednn_matmul_out(t[0], t[1], at(3), at(2), c.alpha, at(4));
  }
}

}  // namespace

double ProductCall::flops() const {
  const auto* p = product_op(op);
  if (p == nullptr || operands.size() <= std::max(p->lhs, p->rhs)) {
    return 0;
  }
  const auto& a = operands[p->lhs];
  const auto& b = operands[p->rhs];
  if (!a.defined || !b.defined || b.sizes.empty()) {
    return 0;
  }
  double n = 1;
  for (const auto s : a.sizes) {
    n *= static_cast<double>(s);
  }
  return 2.0 * n * static_cast<double>(b.sizes.back());
}

std::string ProductCall::key() const {
  std::string k = op;
  for (const auto& s : operands) {
    k += " | ";
    if (!s.defined) {
      k += "-";
      continue;
    }
    k += std::string(c10::toString(s.dtype)) + "@" + s.device.str();
    for (const auto v : s.sizes) {
      k += " " + std::to_string(v);
    }
    k += " /";
    for (const auto v : s.strides) {
      k += " " + std::to_string(v);
    }
  }
  if (alpha != 1.0) {
    k += " | alpha " + std::to_string(alpha);
  }
  return k;
}

ProductRecorder::ProductRecorder() {
  Recording* expected = nullptr;
  auto* rec = new Recording();
  if (!g_recording.compare_exchange_strong(expected, rec)) {
    delete rec;
    TORCH_CHECK(false, "ProductRecorder: another recording is already running");
  }
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end).needsInputs(true));
}

ProductRecorder::~ProductRecorder() {
  at::removeCallback(handle_);
  delete g_recording.exchange(nullptr);
}

std::vector<ProductCall> ProductRecorder::calls() const {
  auto* rec = g_recording.load();
  std::lock_guard<std::mutex> lock(rec->mu);
  return rec->calls;
}

ProductFloor product_floor(const std::vector<ProductCall>& calls, int reps) {
  TORCH_CHECK(reps >= 1, "product_floor: reps must be >= 1, got ", reps);
  std::map<std::string, std::pair<const ProductCall*, ProductGroup>> distinct;
  ProductFloor floor;
  for (const auto& c : calls) {
    auto& [first, group] = distinct[c.key()];
    first = &c;
    ++group.calls;
    group.in_step += c.seconds;
    group.flops += c.flops();
    floor.flops += c.flops();
    floor.in_step += c.seconds;
    ++floor.calls;
  }
  floor.distinct = static_cast<int64_t>(distinct.size());
  torch::NoGradGuard no_grad;
  for (auto& [key, d] : distinct) {
    const ProductCall& c = *d.first;
    std::vector<torch::Tensor> t;
    bool cuda = false;
    for (const auto& s : c.operands) {
      t.push_back(make_operand(s));
      cuda = cuda || (s.defined && s.device.is_cuda());
    }
    // The untimed first call sets the kernel up and brings the operands into cache.
    const double seconds = median_seconds([&] { replay(c, t); }, reps, cuda);
    auto& group = d.second;
    group.key = key;
    group.seconds = seconds * static_cast<double>(group.calls);
    floor.seconds += group.seconds;
    floor.groups.push_back(group);
  }
  std::sort(floor.groups.begin(), floor.groups.end(),
            [](const ProductGroup& a, const ProductGroup& b) { return a.in_step > b.in_step; });
  return floor;
}

}  // namespace moejet::kernels
