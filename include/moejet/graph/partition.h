#pragma once
// Balanced k-way partitioning of a weighted undirected graph with METIS. The graph arrives as a
// dense symmetric affinity matrix (co-activation counts between MLP hidden units for checkpoint
// recycling, class confusions for Mobile V-MoE super-classes): METIS wants integer edge weights,
// so affinities are scaled to 1..1000 (zero stays "no edge"). Parts are balanced in vertex count
// within `imbalance` (METIS' ufactor); the seed makes the result reproducible and lets callers ask
// for different, equally valid partitions.

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace moejet::graph {

/// Part id (0..parts-1) of every vertex of the graph whose [n, n] affinity matrix is given
/// (symmetrised; the diagonal is ignored). parts == 1 puts every vertex in part 0.
std::vector<int64_t> partition_graph(const torch::Tensor& affinity, int64_t parts, uint64_t seed = 0,
                                     double imbalance = 0.03);

/// Total affinity between vertices of different parts (the edge cut), from the same matrix.
double edge_cut(const torch::Tensor& affinity, const std::vector<int64_t>& part);

}  // namespace moejet::graph
