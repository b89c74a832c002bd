#include "moejet/models/vit_checkpoint.h"

#include <cmath>

#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::models {

namespace F = torch::nn::functional;

torch::Tensor resample_pos_embed(const torch::Tensor& pos_embed, int64_t new_h, int64_t new_w,
                                 int64_t num_prefix_tokens, const std::string& interpolation) {
  TORCH_CHECK(pos_embed.dim() == 3 && pos_embed.size(0) == 1, "resample_pos_embed: expected [1, T, D], got ",
              pos_embed.sizes());
  const int64_t grid_tokens = pos_embed.size(1) - num_prefix_tokens;
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(grid_tokens))));
  if (side * side != grid_tokens) {
    throw CheckpointError(fmt::format("pos_embed: {} grid tokens (after {} prefix tokens) is not a square grid",
                                      grid_tokens, num_prefix_tokens));
  }
  if (side == new_h && side == new_w) {
    return pos_embed;
  }
  auto prefix = pos_embed.slice(1, 0, num_prefix_tokens);
  const int64_t D = pos_embed.size(2);
  auto grid = pos_embed.slice(1, num_prefix_tokens).reshape({1, side, side, D}).permute({0, 3, 1, 2});
  auto dtype = grid.scalar_type();
  auto opts = F::InterpolateFuncOptions()
                  .size(std::vector<int64_t>{new_h, new_w})
                  .align_corners(false)
                  .antialias(new_h < side || new_w < side);
  if (interpolation == "bicubic") {
    opts.mode(torch::kBicubic);
  } else if (interpolation == "bilinear") {
    opts.mode(torch::kBilinear);
  } else {
    throw ConfigError(fmt::format("pos_embed interpolation '{}': expected bicubic or bilinear", interpolation));
  }
  grid = F::interpolate(grid.to(torch::kFloat), opts).to(dtype);
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_h * new_w, D});
  return torch::cat({prefix, grid}, 1);
}

io::StateDict filter_vit_checkpoint(const io::StateDict& state, const VitConfig& config,
                                    const std::string& interpolation, std::vector<std::string>* notes) {
  // A class-token checkpoint (final `norm`) into an average-pooling model (`fc_norm` after the
  // pooling, no final norm), e.g. timm's ViT-T into V-JetMoE-T: the two norms sit on different
  // features, so `norm` is dropped and `fc_norm` starts at its init (1, 0), as the MoE Jetpack
  // authors' generator leaves it.
  const bool norm_to_fc_norm =
      config.use_fc_norm() && state.contains("norm.weight") && !state.contains("fc_norm.weight");
  io::StateDict out;
  for (const auto& item : state) {
    std::string key = item.key();
    torch::Tensor value = item.value();
    if (key == "pos_embed" && value.dim() == 3) {
      const int64_t want = config.num_prefix_tokens() + config.num_patches();
      int64_t have_prefix = config.num_prefix_tokens();
      const int64_t have = value.size(1);
      // A checkpoint with a class token loaded into a model without one (or vice versa): the
      // grid is square in exactly one of the two readings.
      auto is_square = [](int64_t n) {
        auto s = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
        return s * s == n;
      };
      if (!is_square(have - have_prefix)) {
        have_prefix = is_square(have - 1) ? 1 : 0;
      }
      if (have_prefix != config.num_prefix_tokens()) {
        if (have_prefix > config.num_prefix_tokens()) {
          value = value.slice(1, have_prefix - config.num_prefix_tokens());
        } else {
          value = torch::cat(
              {torch::zeros({1, config.num_prefix_tokens() - have_prefix, value.size(2)}, value.options()), value}, 1);
        }
        if (notes) {
          notes->push_back(fmt::format("pos_embed: {} prefix tokens in checkpoint, {} in model", have_prefix,
                                       config.num_prefix_tokens()));
        }
      }
      if (value.size(1) != want) {
        const int64_t old_side = static_cast<int64_t>(
            std::llround(std::sqrt(static_cast<double>(value.size(1) - config.num_prefix_tokens()))));
        value = resample_pos_embed(value, config.grid_size(), config.grid_size(), config.num_prefix_tokens(),
                                   interpolation);
        if (notes) {
          notes->push_back(fmt::format("pos_embed: resampled grid {}x{} -> {}x{} ({})", old_side, old_side,
                                       config.grid_size(), config.grid_size(), interpolation));
        }
      }
    }
    if (norm_to_fc_norm && (key == "norm.weight" || key == "norm.bias")) {
      out.insert("fc_norm." + key.substr(5), key == "norm.weight" ? torch::ones_like(value) : torch::zeros_like(value));
      if (notes && key == "norm.weight") {
        notes->push_back(
            "norm: dropped (the checkpoint has a final norm, the model pools by average with "
            "fc_norm, which keeps its init 1, 0)");
      }
      continue;
    }
    if (key == "cls_token" && !config.class_token) {
      if (notes) {
        notes->push_back("cls_token: dropped (model has no class token)");
      }
      continue;
    }
    out.insert(key, value);
  }
  return out;
}

}  // namespace moejet::models
