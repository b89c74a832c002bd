#pragma once
// Checkpoint recycling (MoE Jetpack): the initial weights of an MoE model (ViT or ConvNeXt) made
// from dense checkpoints. Everything outside the MoE blocks' MLPs (patch embedding, tokens,
// position embedding, attention, norms, dense MLPs, final norm and head) comes from the "dense"
// source; every expert of an MoE block is cut from that block's MLP in its group's source (the
// dense one unless another is given per group, e.g. core experts from a ViT-S and universal ones
// from a ViT-T, as the authors' released V-JetMoE-T init): fc1 rows and fc1 bias entries of the
// expert's units, fc2 columns of the same units, fc2 bias copied whole (so that each expert alone
// is a "thinner" version of the dense MLP and the combine weights, which sum to one per token,
// keep one bias).
//
// Wider sources (ViT only): a source may be wider than the model. Its residual-stream channels
// are then selected with the same method as the hidden units (random, uniform, graph on the
// co-activation of norm2 outputs, importance of norm2 outputs; copy cannot choose channels). As in
// the authors' generator, each expert of each block draws its own channels from that block's
// norm2 statistics (`channels` "per-expert"): an expert only reads and writes the stream through
// its own fc1 columns and fc2 rows. Whole-model tensors of a wider dense source (patch embedding,
// tokens, norms, attention, dense MLPs, head) must agree on one stream, so they use one set,
// chosen from the norm2 statistics averaged over blocks; "shared" gives the experts that set too.
// For those whole-model tensors that one set is used for every tensor that touches the stream; attention takes
// whole heads (ranked by their output statistics; graph uses the same ranking) and dense MLPs
// their hidden units per block (see weight_selection.h).
//
// Scale: an expert with h of the H units computes a partial sum of the dense MLP's output. By
// default its fc2 columns are copied as they are, as the authors' code does, so the h/H partial
// sums of a partition add up exactly to the dense MLP. With `rescale` (moejet's own option,
// `--fc2-scale hidden`) its fc2 weight is multiplied by H/h, which makes a uniformly drawn expert
// an unbiased estimate of the dense MLP (as inverted dropout does). The same rule applies to dense
// MLPs narrowed from a wider source. New parameters (slot queries phi, temperatures, slot
// LayerNorm, routers) keep their layer's own initialisation (orthogonal phi, temperature 0.5, as
// the authors' code). The head is copied when its class count matches and left at its
// initialisation otherwise (a new task). A JSON report records the units each expert got and the
// channels and heads taken from each wider source.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moejet/core/json_util.h"
#include "moejet/models/classifier.h"
#include "moejet/recycle/unit_selection.h"
#include "moejet/recycle/unit_stats.h"

namespace moejet::recycle {

struct RecycleOptions {
  Method method = Method::Importance;
  std::string score = "l2";      ///< importance score: l2 (the authors'), l1, l2sq or freq (see UnitStats)
  bool importance_topk = false;  ///< deterministic top-h instead of weighted sampling
  bool rescale = false;          ///< fc2 *= H / h, moejet's own (see above); the authors never rescale
  /// Residual-stream channels of experts cut from a wider source: "per-expert" (the authors'
  /// generator: each expert of each block draws its own set, from that block's norm2 statistics)
  /// or "shared" (the source's one set, as its whole-model tensors use).
  std::string channels = "per-expert";
  std::string uniform = "linspace";  ///< uniform grids: "linspace" (authors') or "shifted" (see unit_selection.h)
  std::string graph = "jetpack";     ///< graph selection: "jetpack" (authors') or "balanced"
  /// Hidden units of the universal experts (SpheroMoE): "draw" (each draws its own h_u units),
  /// "reslice" (the authors' generator: each draws as many units as a core expert of the source,
  /// H * D_model / D_source, and keeps positions round(linspace(0, that - 1, h_u)) of them), or
  /// "auto": reslice when the universal experts' source is wider than the model, as in the
  /// released init, else draw (a same-width source would give every universal expert the same
  /// every-4th units).
  std::string universal_units = "auto";
  uint64_t seed = 0;
};

/// One dense checkpoint, loaded into its model, with the statistics its selection needs: hidden
/// units of the blocks it gives MLPs for (graph, importance), and channels and attention outputs
/// of all blocks when it is wider than the target.
struct RecycleSource {
  std::string name;  ///< the file, for messages and the report
  const models::ImageClassifierImpl* model = nullptr;
  ModelStats stats;
};

struct RecycleSources {
  RecycleSource dense;                          ///< shared weights, and experts of groups not below
  std::map<std::string, RecycleSource> groups;  ///< per expert group ("core", "universal", "experts")
};

/// Whether `method` needs activation statistics (graph and importance do).
bool needs_stats(Method method);

/// Whether `source` is wider than `target` (its channels, heads or dense hidden units must be
/// selected).
bool is_wider(const models::ImageClassifierImpl& source, const models::ImageClassifierImpl& target);

/// What a recycling run did: the options it ran with, how each source was mapped onto the model,
/// and the units (and channels) each expert got. Kept as a struct so that code can read it without
/// knowing the JSON layout; to_json() writes the report file's layout.
struct RecycleReport {
  /// One expert group of one MoE block.
  struct Group {
    std::string name;          ///< "experts", "core" or "universal"
    std::string source;        ///< the source it was cut from
    int64_t experts = 0;       ///< experts in the group
    int64_t hidden = 0;        ///< hidden units of each expert
    int64_t dense_hidden = 0;  ///< hidden units of the source MLP (H)
    // Present when the source has unit statistics for the block.
    std::optional<int64_t> tokens;
    std::optional<double> firing_threshold;
    std::optional<std::vector<float>> unit_importance;          ///< [H], the selection score
    std::optional<int64_t> resliced_from;                       ///< units drawn before the universal re-slice
    std::optional<std::vector<std::vector<int64_t>>> channels;  ///< per expert, when drawn per expert
    double fc2_scale = 1.0;
    std::vector<std::vector<int64_t>> units;              ///< per expert, sorted source unit indices
    std::optional<std::vector<double>> importance_share;  ///< per expert, its share of the total importance
  };
  struct Block {
    int64_t block = 0;
    std::string key;  ///< the block's MLP key
    std::vector<Group> groups;
  };

  RecycleOptions options;
  bool head_copied = false;  ///< false: the head was left at its initialisation (a new class count)
  /// Per source ("dense" and each group with its own): its file, width and, when wider, the
  /// channels and heads taken; free-form, as each kind of source records different things.
  std::map<std::string, json> sources;
  std::vector<Block> blocks;  ///< the MoE blocks, in order

  json to_json() const;
};

/// Fills `moe` from the sources as described above. Throws CheckpointError / ConfigError naming
/// the source, the key and the shapes when they do not fit. Returns the report.
RecycleReport recycle_model_report(const RecycleSources& sources, models::ImageClassifierImpl& moe,
                                   const RecycleOptions& options);

/// recycle_model_report(...).to_json().
json recycle_model(const RecycleSources& sources, models::ImageClassifierImpl& moe, const RecycleOptions& options);

/// One same-width dense source for everything; `stats` holds the MoE blocks' unit statistics.
json recycle_model(const models::ImageClassifierImpl& dense, models::ImageClassifierImpl& moe,
                   const std::map<int64_t, UnitStats>& stats, const RecycleOptions& options);

}  // namespace moejet::recycle
