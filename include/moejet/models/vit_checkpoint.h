#pragma once
// Adapting ViT checkpoints to a model, as timm's checkpoint_filter_fn does: strip wrapper prefixes,
// resample the absolute position embedding when the checkpoint's patch grid differs from the
// model's (e.g. a 224-pixel checkpoint fine-tuned at 32 pixels), and reconcile class-token
// prefixes. Anything else that does not fit is left for load_state_dict to report.

#include <string>
#include <vector>

#include <torch/types.h>

#include "moejet/io/state_dict.h"
#include "moejet/models/vit_config.h"

namespace moejet::models {

/// pos_embed [1, prefix + gh*gw, D] -> [1, prefix + new_h*new_w, D]; prefix tokens are kept as
/// they are and the grid is interpolated ("bicubic" as timm, or "bilinear"), with antialiasing when
/// shrinking.
torch::Tensor resample_pos_embed(const torch::Tensor& pos_embed, int64_t new_h, int64_t new_w,
                                 int64_t num_prefix_tokens, const std::string& interpolation);

/// Returns the filtered state dict; `notes` receives one line per adaptation made.
io::StateDict filter_vit_checkpoint(const io::StateDict& state, const VitConfig& config,
                                    const std::string& interpolation = "bicubic",
                                    std::vector<std::string>* notes = nullptr);

}  // namespace moejet::models
