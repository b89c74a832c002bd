#pragma once
// Weight selection: a narrower ViT's tensors cut out of a wider ViT checkpoint (Xu et al.,
// "Initializing Models with Larger Ones"; MoE Jetpack's generator does the same for its core
// experts). One set of residual-stream channels is used for every tensor that reads or writes the
// stream (patch embedding, tokens, position embedding, norms, layer scales, attention and MLP
// in/out projections, head), so that the narrowed network is a consistent sub-network of the
// wide one. Attention keeps whole heads: q, k and v rows and proj columns of the chosen heads,
// which needs equal head widths in source and target. MLP hidden units are chosen per block.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/io/state_dict.h"
#include "moejet/models/vit_config.h"

namespace moejet::recycle {

struct VitSelection {
  std::vector<int64_t> channels;                  ///< D_dst of the source's D_src, sorted
  std::map<int64_t, std::vector<int64_t>> heads;  ///< per block: h_dst of the source's heads
  std::map<int64_t, std::vector<int64_t>> units;  ///< per dense block: H_dst of the source's units
  bool rescale = false;                           ///< fc2 *= H_src / H_dst for narrowed MLPs (see recycle.h)
};

/// Checks that `dst` can be cut from `src` (equal depth, width no smaller; for a `whole` model
/// also patch size, prefix tokens, MLP hidden size no smaller and whole heads of equal width),
/// throwing CheckpointError naming `source`, the tensor and both shapes otherwise.
void check_vit_selectable(const models::VitConfig& src, const models::VitConfig& dst, const std::string& source,
                          bool whole = true);

/// The source state narrowed to `dst`'s shapes; keys for which `skip(key)` holds are left out
/// (e.g. the MLPs of MoE blocks, filled expert by expert). The head is narrowed along its input
/// only and is left out when the class counts differ.
io::StateDict select_vit_weights(const io::StateDict& state, const models::VitConfig& src, const models::VitConfig& dst,
                                 const VitSelection& selection, const std::string& source,
                                 const std::function<bool(const std::string&)>& skip);

/// Rows of q, k and v (in that order) of the given heads of width `head_dim` in a fused qkv of
/// width `dim`.
std::vector<int64_t> qkv_rows(const std::vector<int64_t>& heads, int64_t head_dim, int64_t dim);
/// Channels of the given heads.
std::vector<int64_t> head_channels(const std::vector<int64_t>& heads, int64_t head_dim);

}  // namespace moejet::recycle
