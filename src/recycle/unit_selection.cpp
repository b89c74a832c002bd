#include "moejet/recycle/unit_selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/graph/partition.h"

namespace moejet::recycle {

Method parse_method(const std::string& name) {
  if (name == "copy") return Method::Copy;
  if (name == "random") return Method::Random;
  if (name == "uniform") return Method::Uniform;
  if (name == "graph") return Method::Graph;
  if (name == "importance") return Method::Importance;
  throw ConfigError(fmt::format("unknown recycling method '{}' (expected copy, random, uniform, graph or importance)",
                                name));
}

std::string method_name(Method method) {
  switch (method) {
    case Method::Copy: return "copy";
    case Method::Random: return "random";
    case Method::Uniform: return "uniform";
    case Method::Graph: return "graph";
    case Method::Importance: return "importance";
  }
  return "?";
}

namespace {

std::mt19937_64 expert_rng(uint64_t seed, int64_t expert) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(expert), 0x5eedu};
  return std::mt19937_64(seq);
}

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Top-h of per-unit keys (ties broken by unit index, so results are deterministic).
std::vector<int64_t> top_units(const std::vector<double>& key, int64_t h) {
  std::vector<int64_t> idx(key.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + h, idx.end(), [&](int64_t a, int64_t b) {
    return key[a] != key[b] ? key[a] > key[b] : a < b;
  });
  idx.resize(h);
  return sorted(idx);
}

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Brings a METIS part to exactly h units: drops the members least tied to the rest of the part,
// or adds the outsiders most tied to it.
std::vector<int64_t> fit_part(std::vector<int64_t> members, int64_t h, const torch::Tensor& affinity) {
  const int64_t H = affinity.size(0);
  while (static_cast<int64_t>(members.size()) != h) {
    auto in = torch::zeros({H}, torch::kDouble);
    for (auto m : members) in[m] = 1.0;
    auto tie = affinity.to(torch::kDouble).mv(in);  // affinity of every unit to the part
    auto t = tie.accessor<double, 1>();
    if (static_cast<int64_t>(members.size()) > h) {
      auto worst = std::min_element(members.begin(), members.end(), [&](int64_t a, int64_t b) {
        return t[a] != t[b] ? t[a] < t[b] : a > b;
      });
      members.erase(worst);
    } else {
      std::vector<char> is_member(H, 0);
      for (auto m : members) is_member[m] = 1;
      int64_t best = -1;
      for (int64_t u = 0; u < H; ++u) {
        if (!is_member[u] && (best < 0 || t[u] > t[best])) best = u;
      }
      members.push_back(best);
    }
  }
  return sorted(members);
}

}  // namespace

std::vector<std::vector<int64_t>> select_units(Method method, const SelectionInput& in) {
  const int64_t H = in.hidden, E = in.experts, h = in.units;
  check<ConfigError>(H > 0 && E > 0 && h > 0, "unit selection: invalid sizes H={} experts={} units={}", H, E, h);
  check<ConfigError>(h <= H,
                     "experts of hidden size {} cannot be cut from a dense MLP of {} hidden units "
                     "(use a smaller expert mlp_ratio or a wider dense checkpoint)",
                     h, H);
  std::vector<std::vector<int64_t>> out;
  out.reserve(E);
  switch (method) {
    case Method::Copy: {
      std::vector<int64_t> first(h);
      std::iota(first.begin(), first.end(), 0);
      out.assign(E, first);
      break;
    }
    case Method::Random: {
      for (int64_t e = 0; e < E; ++e) {
        std::vector<int64_t> all(H);
        std::iota(all.begin(), all.end(), 0);
        auto rng = expert_rng(in.seed, e);
        std::shuffle(all.begin(), all.end(), rng);
        all.resize(h);
        out.push_back(sorted(all));
      }
      break;
    }
    case Method::Uniform: {
      const double stride = static_cast<double>(H) / static_cast<double>(h);
      // Expert e starts its grid at unit e mod floor(stride): the first floor(stride) experts
      // get disjoint grids, later ones repeat them (there are no more evenly spaced grids).
      const int64_t offsets = std::max<int64_t>(1, static_cast<int64_t>(std::floor(stride)));
      for (int64_t e = 0; e < E; ++e) {
        const double offset = static_cast<double>(e % offsets);
        std::vector<int64_t> u(h);
        for (int64_t j = 0; j < h; ++j) {
          u[j] = std::min<int64_t>(H - 1, static_cast<int64_t>(std::floor(offset + static_cast<double>(j) * stride)));
        }
        out.push_back(sorted(u));
      }
      break;
    }
    case Method::Graph: {
      check<ConfigError>(in.coactivation.defined() && in.coactivation.size(0) == H,
                         "graph recycling needs the [{}, {}] co-activation matrix of the dense MLP", H, H);
      const int64_t parts = std::max<int64_t>(1, std::llround(static_cast<double>(H) / static_cast<double>(h)));
      auto affinity = in.coactivation.to(torch::kDouble);
      for (int64_t round = 0; static_cast<int64_t>(out.size()) < E; ++round) {
        auto part = graph::partition_graph(affinity, parts, in.seed + static_cast<uint64_t>(round));
        std::vector<std::vector<int64_t>> members(parts);
        for (int64_t u = 0; u < H; ++u) members[part[u]].push_back(u);
        for (int64_t p = 0; p < parts && static_cast<int64_t>(out.size()) < E; ++p) {
          out.push_back(fit_part(members[p], h, affinity));
        }
      }
      break;
    }
    case Method::Importance: {
      check<ConfigError>(in.score.defined() && in.score.numel() == H,
                         "importance recycling needs a score for each of the {} hidden units", H);
      auto score = to_vector(in.score);
      for (double s : score) {
        check<ConfigError>(std::isfinite(s) && s >= 0.0, "importance scores must be finite and >= 0");
      }
      if (in.importance_topk) {
        out.assign(E, top_units(score, h));
        break;
      }
      for (int64_t e = 0; e < E; ++e) {
        // Efraimidis-Spirakis: the h largest log(u)/w are a weighted draw without replacement.
        auto rng = expert_rng(in.seed, e);
        std::uniform_real_distribution<double> uni(1e-300, 1.0);
        std::vector<double> key(H);
        for (int64_t u = 0; u < H; ++u) {
          key[u] = score[u] > 0 ? std::log(uni(rng)) / score[u] : -std::numeric_limits<double>::infinity();
        }
        out.push_back(top_units(key, h));
      }
      break;
    }
  }
  return out;
}

}  // namespace moejet::recycle
