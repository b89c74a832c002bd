#pragma once
// The common face of the MoE layers that replace a transformer block's MLP: a FeedForward that
// also reports, after each forward, its auxiliary loss (e.g. V-MoE's load-balancing loss; zero
// for Soft MoE / SpheroMoE) and routing statistics for the training log. Statistics are detached
// and cheap; the trainer sums the aux losses of all MoE layers into the objective.

#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "moejet/moe/expert_mlp.h"
#include "moejet/nn/feed_forward.h"

namespace moejet::moe {

struct RoutingStats {
  /// Share of routing mass per expert over the batch, sums to 1 ([E], the experts in the order of
  /// expert_groups(); detached, CPU).
  torch::Tensor expert_load;
  /// Mean entropy (nats) of the dispatch distributions (per slot over tokens for Soft MoE /
  /// SpheroMoE, per token over experts for top-k).
  double dispatch_entropy = 0.0;
  /// Fraction of token-choices dropped by expert capacity (top-k only).
  double dropped_fraction = 0.0;
};

class MoeLayer : public nn::FeedForward {
 public:
  /// Scalar auxiliary loss of the last forward (already weighted by the layer's own config).
  torch::Tensor last_aux_loss;
  RoutingStats last_stats;
  /// Collect routing statistics in forward (off in inference-only paths to save work).
  bool collect_stats = true;
  virtual std::string kind() const = 0;
  /// The layer's batched expert MLPs under their module names ("experts", or "core" and
  /// "universal"): what checkpoint recycling fills from a dense MLP.
  virtual std::vector<std::pair<std::string, ExpertMlp>> expert_groups() const = 0;
  /// One line on the experts, e.g. "8 experts (hidden 768), top-2", for `moejet info`.
  virtual std::string describe() const = 0;
};

}  // namespace moejet::moe
