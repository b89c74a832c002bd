#pragma once
// Checkpoint recycling (MoE Jetpack): the initial weights of an MoE model (ViT or ConvNeXt) made
// from a dense model of the same architecture and width. Everything outside the MoE blocks' MLPs (patch embedding, tokens, position
// embedding, attention, norms, dense MLPs, final norm and head) is copied; every expert of an MoE
// block is cut from that block's dense MLP: fc1 rows and fc1 bias entries of the expert's units,
// fc2 columns of the same units, fc2 bias copied whole (so that each expert alone is a "thinner"
// version of the dense MLP and the combine weights, which sum to one per token, keep one bias).
//
// Scale: an expert with h of the H units computes a partial sum of the dense MLP's output. With
// `rescale` (the default) its fc2 weight is multiplied by H/h, which makes a uniformly drawn
// expert an unbiased estimate of the dense MLP (as inverted dropout does); without it, the h/H
// partial sums of a partition add up exactly to the dense MLP. New parameters (slot queries phi,
// temperatures, slot LayerNorm, routers) keep their layer's own initialisation (orthogonal phi,
// temperature 0.5, as the authors' code). The head is copied when its shape matches and left at
// its initialisation otherwise (a new task). A JSON report records the units each expert got.

#include <cstdint>
#include <map>
#include <string>

#include "moejet/core/json_util.h"
#include "moejet/models/classifier.h"
#include "moejet/recycle/unit_selection.h"
#include "moejet/recycle/unit_stats.h"

namespace moejet::recycle {

struct RecycleOptions {
  Method method = Method::Importance;
  std::string score = "l1";      ///< importance score: l1, l2 or freq (see UnitStats)
  bool importance_topk = false;  ///< deterministic top-h instead of weighted sampling
  bool rescale = true;           ///< fc2 *= H / h (see above)
  uint64_t seed = 0;
};

/// Whether `method` needs activation statistics (graph and importance do).
bool needs_stats(Method method);

/// Fills `moe` from `dense` as described above; `stats` must hold every MoE block when
/// needs_stats(options.method). Throws CheckpointError / ConfigError naming the block, key and
/// shapes when the two models do not fit. Returns the report.
json recycle_model(const models::ImageClassifierImpl& dense, models::ImageClassifierImpl& moe,
                 const std::map<int64_t, UnitStats>& stats, const RecycleOptions& options);

}  // namespace moejet::recycle
