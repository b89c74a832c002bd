#pragma once
// Which hidden units of a dense MLP each expert receives: the five recycling methods of the MoE
// Jetpack ablation (copy < random < uniform < graph < importance on ImageNet).
//   copy        every expert gets units 0..h-1 (the whole MLP when h == H): sparse upcycling;
//   random      every expert draws h units uniformly without replacement;
//   uniform     evenly spaced units. "linspace" (the authors' generator): every expert gets
//               round(linspace(0, H-1, h)), so all experts start identical; "shifted" (moejet's
//               own): stride H/h, expert e's grid shifted by e mod floor(H/h), so the first
//               floor(H/h) experts are disjoint;
//   graph       "jetpack" (the authors' generator): METIS splits the unweighted co-activation
//               graph (an edge wherever two units ever fire together) into 32 parts; each expert
//               draws parts without replacement with probability proportional to their internal
//               co-activation, concatenates their units in draw order and keeps the first h, so
//               experts overlap. "balanced" (moejet's own): METIS on the weighted graph into
//               ~H/h balanced parts, one part per expert (more experts than parts: further
//               partitions with other seeds), each trimmed/grown to h units by its affinity;
//   importance  units drawn without replacement with probability proportional to their importance
//               score (Efraimidis-Spirakis keys), so the most important units land in most experts
//               and dead units in none; `importance_topk` takes the h best units deterministically.
// Units of an expert are returned sorted. Every method is seeded.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace moejet::recycle {

enum class Method { Copy, Random, Uniform, Graph, Importance };

Method parse_method(const std::string& name);  ///< copy|random|uniform|graph|importance
std::string method_name(Method method);

struct SelectionInput {
  int64_t hidden = 0;   ///< H: units of the dense MLP
  int64_t experts = 0;  ///< experts to fill
  int64_t units = 0;    ///< h: units per expert (<= H)
  uint64_t seed = 0;
  torch::Tensor score;         ///< [H] importance (importance method)
  torch::Tensor coactivation;  ///< [H, H] (graph method)
  bool importance_topk = false;
  std::string uniform = "linspace";  ///< uniform: "linspace" (authors') or "shifted" (moejet)
  std::string graph = "jetpack";     ///< graph: "jetpack" (authors') or "balanced" (moejet)
  int64_t graph_parts = 32;          ///< graph "jetpack": METIS parts (the authors' 32; at most H)
};

std::vector<std::vector<int64_t>> select_units(Method method, const SelectionInput& in);

/// round(linspace(0, n - 1, h)) with torch.round's half-to-even: the authors' evenly spaced
/// positions (their uniform grid, and the universal experts' re-slice).
std::vector<int64_t> rounded_linspace(int64_t n, int64_t h);

}  // namespace moejet::recycle
