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
  if (name == "copy")
    return Method::Copy;
  if (name == "random")
    return Method::Random;
  if (name == "uniform")
    return Method::Uniform;
  if (name == "graph")
    return Method::Graph;
  if (name == "importance")
    return Method::Importance;
  throw ConfigError(
      fmt::format("unknown recycling method '{}' (expected copy, random, uniform, graph or importance)", name));
}

std::string method_name(Method method) {
  switch (method) {
    case Method::Copy:
      return "copy";
    case Method::Random:
      return "random";
    case Method::Uniform:
      return "uniform";
    case Method::Graph:
      return "graph";
    case Method::Importance:
      return "importance";
  }
  return "?";
}

namespace {

std::mt19937_64 expert_rng(uint64_t seed, int64_t expert) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(expert),
                    0x5eedu};
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
  std::partial_sort(idx.begin(), idx.begin() + h, idx.end(),
                    [&](int64_t a, int64_t b) { return key[a] != key[b] ? key[a] > key[b] : a < b; });
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
    for (auto m : members)
      in[m] = 1.0;
    auto tie = affinity.to(torch::kDouble).mv(in);  // affinity of every unit to the part
    auto t = tie.accessor<double, 1>();
    if (static_cast<int64_t>(members.size()) > h) {
      auto worst = std::min_element(members.begin(), members.end(),
                                    [&](int64_t a, int64_t b) { return t[a] != t[b] ? t[a] < t[b] : a > b; });
      members.erase(worst);
    } else {
      std::vector<char> is_member(H, 0);
      for (auto m : members)
        is_member[m] = 1;
      int64_t best = -1;
      for (int64_t u = 0; u < H; ++u) {
        if (!is_member[u] && (best < 0 || t[u] > t[best]))
          best = u;
      }
      members.push_back(best);
    }
  }
  return sorted(members);
}

// The authors' graph selection (gen_ViT_MoE_weight.py): METIS on the unweighted co-activation
// graph, parts drawn per expert in proportion to their internal co-activation. Their expert takes
// P/2 + 1 parts and keeps the first h units; drawing the whole weighted order of parts and keeping
// the first h units is the same whenever those parts hold h units, and still fills an expert when
// they do not (h > about H/2, where theirs would come up short).
std::vector<std::vector<int64_t>> jetpack_graph_units(const SelectionInput& in) {
  const int64_t H = in.hidden, h = in.units;
  check<ConfigError>(in.graph_parts > 0, "graph unit selection: parts must be > 0, got {}", in.graph_parts);
  const int64_t P = std::min(in.graph_parts, H);
  auto co = in.coactivation.to(torch::kCPU, torch::kDouble).clone();
  co.fill_diagonal_(0.0);
  // Unweighted: every pair that ever fired together is one edge of weight 1.
  auto edges = co.gt(0.0).to(torch::kDouble);
  auto part = graph::partition_graph(edges, P, in.seed);
  std::vector<std::vector<int64_t>> members(P);
  for (int64_t u = 0; u < H; ++u)
    members[part[u]].push_back(u);
  auto ca = co.accessor<double, 2>();
  std::vector<double> weight(P, 0.0);
  for (int64_t p = 0; p < P; ++p) {
    for (auto i : members[p]) {
      for (auto j : members[p])
        weight[p] += ca[i][j];
    }
  }
  std::vector<std::vector<int64_t>> out;
  for (int64_t e = 0; e < in.experts; ++e) {
    // Efraimidis-Spirakis keys give the order of a weighted draw without replacement; parts with
    // no internal co-activation come last, in random order.
    auto rng = expert_rng(in.seed, e);
    std::uniform_real_distribution<double> uni(1e-300, 1.0);
    std::vector<std::pair<double, int64_t>> key(P);
    for (int64_t p = 0; p < P; ++p) {
      const double r = uni(rng);
      key[p] = {weight[p] > 0 ? std::log(r) / weight[p] : -1e300 * (1.0 + r), p};
    }
    std::sort(key.begin(), key.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<int64_t> units;
    for (const auto& [k, p] : key) {
      for (auto u : members[p]) {
        if (static_cast<int64_t>(units.size()) < h)
          units.push_back(u);
      }
    }
    out.push_back(sorted(units));
  }
  return out;
}

}  // namespace

std::vector<int64_t> rounded_linspace(int64_t n, int64_t h) {
  std::vector<int64_t> u(static_cast<size_t>(h));
  for (int64_t j = 0; j < h; ++j) {
    const double x = h == 1 ? 0.0 : static_cast<double>(j) * static_cast<double>(n - 1) / static_cast<double>(h - 1);
    u[static_cast<size_t>(j)] = static_cast<int64_t>(std::nearbyint(x));  // FE_TONEAREST: half to even
  }
  return u;
}

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
      check<ConfigError>(in.uniform == "linspace" || in.uniform == "shifted",
                         "uniform unit selection: unknown grid '{}' (expected linspace or shifted)", in.uniform);
      if (in.uniform == "linspace") {
        out.assign(E, rounded_linspace(H, h));  // the authors' generator: the same grid for every expert
        break;
      }
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
      check<ConfigError>(in.graph == "jetpack" || in.graph == "balanced",
                         "graph unit selection: unknown variant '{}' (expected jetpack or balanced)", in.graph);
      if (in.graph == "jetpack") {
        out = jetpack_graph_units(in);
        break;
      }
      const int64_t parts = std::max<int64_t>(1, std::llround(static_cast<double>(H) / static_cast<double>(h)));
      auto affinity = in.coactivation.to(torch::kDouble);
      for (int64_t round = 0; static_cast<int64_t>(out.size()) < E; ++round) {
        auto part = graph::partition_graph(affinity, parts, in.seed + static_cast<uint64_t>(round));
        std::vector<std::vector<int64_t>> members(parts);
        for (int64_t u = 0; u < H; ++u)
          members[part[u]].push_back(u);
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
