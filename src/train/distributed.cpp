#include "moejet/train/distributed.h"

#include <cstdlib>

#include <torch/torch.h>

#include "moejet/core/error.h"

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace moejet::train {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    return fallback;
  }
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    throw ConfigError(fmt::format("environment variable {}='{}' is not an integer", name, v));
  }
}

}  // namespace

DistConfig dist_config_from_env() {
  DistConfig c;
  c.world_size = env_int("WORLD_SIZE", 1);
  c.rank = env_int("RANK", 0);
  c.local_rank = env_int("LOCAL_RANK", c.rank);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') {
    c.master_addr = a;
  }
  c.master_port = env_int("MASTER_PORT", c.master_port);
  c.timeout = std::chrono::seconds(env_int("MOEJET_DIST_TIMEOUT", 300));
  check<ConfigError>(c.world_size >= 1 && c.rank >= 0 && c.rank < c.world_size,
                     "distributed: RANK={} is outside WORLD_SIZE={}", c.rank, c.world_size);
  return c;
}

bool distributed_available() {
#ifdef USE_C10D_GLOO
  return true;
#else
  return false;
#endif
}

#ifdef USE_C10D_GLOO

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
};

namespace {

// Runs a collective and turns any c10d/gloo failure (a peer that died, a timeout) into one error.
template <typename F>
void collective(const DistConfig& c, const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    throw Error(
        fmt::format("distributed: rank {}/{}: {} failed (a peer process exited or the {} s timeout "
                    "passed): {}",
                    c.rank, c.world_size, what, c.timeout.count(), e.what()));
  }
}

}  // namespace

Distributed::Distributed(const DistConfig& config, torch::Device device)
    : config_(config), impl_(std::make_unique<Impl>()) {
  collective(config_, "rendezvous", [&] {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(config_.master_port);
    so.isServer = config_.rank == 0;
    so.numWorkers = config_.world_size;
    so.waitWorkers = true;
    so.timeout = config_.timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(config_.master_addr, so);
#ifdef USE_C10D_NCCL
    if (device.is_cuda()) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = config_.timeout;
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, config_.rank, config_.world_size, opts);
      return;
    }
#endif
    check<ConfigError>(!device.is_cuda(), "distributed: this build has no NCCL; run with --device cpu (Gloo)");
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = config_.timeout;
    // The interface Gloo listens on: GLOO_SOCKET_IFNAME as in PyTorch, loopback for a local
    // job, else the address this host's name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    const bool local = config_.master_addr == "localhost" || config_.master_addr.rfind("127.", 0) == 0;
    opts->devices.push_back(ifname != nullptr && *ifname != '\0'
                                ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                            : local ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                    : c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, config_.rank, config_.world_size, opts);
  });
}

Distributed::~Distributed() = default;

void Distributed::broadcast(const std::vector<torch::Tensor>& tensors) {
  collective(config_, "broadcast", [&] {
    torch::NoGradGuard ng;
    for (const auto& t : tensors) {
      std::vector<torch::Tensor> v{t.data()};
      impl_->pg->broadcast(v)->wait();
      torch::autograd::impl::bump_version(t);  // written by the backend, unseen by ATen
    }
  });
}

void Distributed::average_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  torch::NoGradGuard ng;
  std::vector<std::vector<torch::Tensor>> buckets(1);
  int64_t bytes = 0;
  for (const auto& p : params) {
    const auto& g = p.grad();
    if (!g.defined())
      continue;
    if (bytes > 0 && bytes + static_cast<int64_t>(g.nbytes()) > bucket_bytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(g);
    bytes += static_cast<int64_t>(g.nbytes());
  }
  std::vector<torch::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  collective(config_, "gradient all-reduce", [&] {
    for (auto& b : buckets) {
      if (b.empty())
        continue;
      std::vector<torch::Tensor> pieces;
      for (auto& g : b)
        pieces.push_back(g.reshape({-1}));
      std::vector<torch::Tensor> one{torch::cat(pieces)};
      flats.push_back(one[0]);
      works.push_back(impl_->pg->allreduce(one));
    }
    for (auto& w : works)
      w->wait();
  });
  const double inv = 1.0 / static_cast<double>(config_.world_size);
  size_t fi = 0;
  for (auto& b : buckets) {
    if (b.empty())
      continue;
    int64_t off = 0;
    for (auto& g : b) {
      g.copy_(flats[fi].narrow(0, off, g.numel()).view_as(g).mul(inv));
      off += g.numel();
    }
    ++fi;
  }
}

torch::Tensor Distributed::sum(torch::Tensor t) {
  collective(config_, "all-reduce", [&] {
    std::vector<torch::Tensor> v{t};
    impl_->pg->allreduce(v)->wait();
  });
  return t;
}

double Distributed::max_divergence(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors)
    flat.push_back(t.detach().reshape({-1}).to(torch::kFloat));
  auto all = torch::cat(flat);
  auto hi = all.clone(), lo = all.clone();
  collective(config_, "parameter check", [&] {
    std::vector<torch::Tensor> a{hi}, b{lo};
    c10d::AllreduceOptions mx, mn;
    mx.reduceOp = c10d::ReduceOp::MAX;
    mn.reduceOp = c10d::ReduceOp::MIN;
    impl_->pg->allreduce(a, mx)->wait();
    impl_->pg->allreduce(b, mn)->wait();
  });
  return (hi - lo).abs().max().item<double>();
}

void Distributed::barrier() {
  collective(config_, "barrier", [&] { impl_->pg->barrier()->wait(); });
}

#else  // no c10d backend in this build

struct Distributed::Impl {};

Distributed::Distributed(const DistConfig& config, torch::Device) : config_(config) {
  throw ConfigError("distributed: this moejet was built without c10d/Gloo (install libgloo-dev and rebuild)");
}
Distributed::~Distributed() = default;
void Distributed::broadcast(const std::vector<torch::Tensor>&) {}
void Distributed::average_gradients(const std::vector<torch::Tensor>&, int64_t) {}
torch::Tensor Distributed::sum(torch::Tensor t) {
  return t;
}
double Distributed::max_divergence(const std::vector<torch::Tensor>&) {
  return 0.0;
}
void Distributed::barrier() {}

#endif

}  // namespace moejet::train
