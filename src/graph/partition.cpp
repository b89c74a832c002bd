#include "moejet/graph/partition.h"

#include <metis.h>

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::graph {

std::vector<int64_t> partition_graph(const torch::Tensor& affinity, int64_t parts, uint64_t seed, double imbalance) {
  check<ConfigError>(affinity.dim() == 2 && affinity.size(0) == affinity.size(1),
                     "graph partition: affinity must be a square matrix, got {}", fmt::join(affinity.sizes(), "x"));
  const int64_t n = affinity.size(0);
  check<ConfigError>(parts >= 1 && parts <= n, "graph partition: cannot split {} vertices into {} parts", n, parts);
  if (parts == 1) {
    return std::vector<int64_t>(n, 0);
  }
  auto a = affinity.detach().to(torch::kCPU, torch::kDouble);
  a = (a + a.t()) * 0.5;
  a.fill_diagonal_(0.0);
  check<ConfigError>(a.min().item<double>() >= 0.0, "graph partition: affinities must be >= 0");
  const double top = a.max().item<double>();
  // Integer weights for METIS: 1..1000 relative to the strongest edge, 0 = no edge.
  auto w = top > 0 ? (a / top * 1000.0).ceil() : a;
  auto acc = w.accessor<double, 2>();
  std::vector<idx_t> xadj{0}, adjncy, adjwgt;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (i != j && acc[i][j] > 0) {
        adjncy.push_back(static_cast<idx_t>(j));
        adjwgt.push_back(static_cast<idx_t>(acc[i][j]));
      }
    }
    xadj.push_back(static_cast<idx_t>(adjncy.size()));
  }
  idx_t nvtxs = static_cast<idx_t>(n), ncon = 1, nparts = static_cast<idx_t>(parts), objval = 0;
  std::vector<idx_t> part(n, 0);
  idx_t options[METIS_NOPTIONS];
  METIS_SetDefaultOptions(options);
  options[METIS_OPTION_SEED] = static_cast<idx_t>(seed % 2147483647ULL);
  options[METIS_OPTION_UFACTOR] = static_cast<idx_t>(std::lround(imbalance * 1000.0));
  options[METIS_OPTION_NUMBERING] = 0;
  // Recursive bisection balances small graphs (tens of classes) far better than k-way.
  int status = n <= 256 ? METIS_PartGraphRecursive(&nvtxs, &ncon, xadj.data(), adjncy.data(), nullptr, nullptr,
                                                   adjwgt.empty() ? nullptr : adjwgt.data(), &nparts, nullptr, nullptr,
                                                   options, &objval, part.data())
                        : METIS_PartGraphKway(&nvtxs, &ncon, xadj.data(), adjncy.data(), nullptr, nullptr,
                                              adjwgt.empty() ? nullptr : adjwgt.data(), &nparts, nullptr, nullptr,
                                              options, &objval, part.data());
  check<Error>(status == METIS_OK, "graph partition: METIS failed (status {}) on {} vertices, {} parts", status, n,
               parts);
  return std::vector<int64_t>(part.begin(), part.end());
}

double edge_cut(const torch::Tensor& affinity, const std::vector<int64_t>& part) {
  auto a = affinity.detach().to(torch::kCPU, torch::kDouble);
  a = (a + a.t()) * 0.5;
  auto p = torch::tensor(part, torch::kLong);
  auto differ = p.unsqueeze(0).ne(p.unsqueeze(1));
  return (a * differ).sum().item<double>() * 0.5;
}

}  // namespace moejet::graph
