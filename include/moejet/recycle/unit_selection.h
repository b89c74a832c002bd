#pragma once
// Which hidden units of a dense MLP each expert receives: the five recycling methods of the MoE
// Jetpack ablation (copy < random < uniform < graph < importance on ImageNet).
//   copy        every expert gets units 0..h-1 (the whole MLP when h == H): sparse upcycling;
//   random      every expert draws h units uniformly without replacement;
//   uniform     evenly spaced units (stride H/h), expert e's grid shifted by e mod floor(H/h);
//   graph       the co-activation graph split by METIS into ~H/h balanced parts, one part per
//               expert (more experts than parts: further partitions with other seeds), each part
//               trimmed/grown to h units by its affinity to the part;
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
  int64_t hidden = 0;          ///< H: units of the dense MLP
  int64_t experts = 0;         ///< experts to fill
  int64_t units = 0;           ///< h: units per expert (<= H)
  uint64_t seed = 0;
  torch::Tensor score;         ///< [H] importance (importance method)
  torch::Tensor coactivation;  ///< [H, H] (graph method)
  bool importance_topk = false;
};

std::vector<std::vector<int64_t>> select_units(Method method, const SelectionInput& in);

}  // namespace moejet::recycle
