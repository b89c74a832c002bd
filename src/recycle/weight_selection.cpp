#include "moejet/recycle/weight_selection.h"

#include <regex>

#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::recycle {

std::vector<int64_t> head_channels(const std::vector<int64_t>& heads, int64_t head_dim) {
  std::vector<int64_t> out;
  for (auto h : heads) {
    for (int64_t j = 0; j < head_dim; ++j)
      out.push_back(h * head_dim + j);
  }
  return out;
}

std::vector<int64_t> qkv_rows(const std::vector<int64_t>& heads, int64_t head_dim, int64_t dim) {
  std::vector<int64_t> out;
  const auto ch = head_channels(heads, head_dim);
  for (int64_t part = 0; part < 3; ++part) {
    for (auto c : ch)
      out.push_back(part * dim + c);
  }
  return out;
}

void check_vit_selectable(const models::VitConfig& src, const models::VitConfig& dst, const std::string& source,
                          bool whole) {
  const int64_t D = src.embed_dim, d = dst.embed_dim;
  const auto shape = [](int64_t a, int64_t b) { return fmt::format("[{}, {}]", a, b); };
  check<CheckpointError>(src.depth == dst.depth, "{}: {} blocks, the target model has {}; weight selection keeps depth",
                         source, src.depth, dst.depth);
  check<CheckpointError>(D >= d,
                         "{}: patch_embed.proj.weight is {} channels wide ([{}, {}, {}, {}]), narrower than the "
                         "target's {} ([{}, {}, {}, {}]); a source must be at least as wide as the model",
                         source, D, D, src.in_chans, src.patch_size, src.patch_size, d, d, dst.in_chans, dst.patch_size,
                         dst.patch_size);
  if (!whole) {
    return;  // an expert source: only its MLPs are read, and their sizes are checked per group
  }
  check<CheckpointError>(src.mlp_hidden() >= dst.mlp_hidden(),
                         "{}: blocks.0.mlp.fc1.weight {} has fewer hidden units than the target's {}", source,
                         shape(src.mlp_hidden(), D), shape(dst.mlp_hidden(), d));
  check<CheckpointError>(src.patch_size == dst.patch_size && src.in_chans == dst.in_chans,
                         "{}: patch_embed.proj.weight [{}, {}, {}, {}] cannot be narrowed to [{}, {}, {}, {}]", source,
                         D, src.in_chans, src.patch_size, src.patch_size, d, dst.in_chans, dst.patch_size,
                         dst.patch_size);
  check<CheckpointError>(src.num_prefix_tokens() == dst.num_prefix_tokens(),
                         "{}: {} class token(s), the target model {}", source, src.num_prefix_tokens(),
                         dst.num_prefix_tokens());
  const int64_t hd = D / src.num_heads, td = d / dst.num_heads;
  check<CheckpointError>(hd == td && src.num_heads >= dst.num_heads,
                         "{}: blocks.0.attn.qkv.weight {} holds {} heads of width {}, the target's {} needs {} "
                         "heads of width {}; whole heads can only be taken when the head widths agree",
                         source, shape(3 * D, D), src.num_heads, hd, shape(3 * d, d), dst.num_heads, td);
}

namespace {

torch::Tensor pick(const torch::Tensor& t, int64_t dim, const std::vector<int64_t>& idx) {
  return t.index_select(dim, torch::tensor(idx, torch::kLong)).contiguous();
}

}  // namespace

io::StateDict select_vit_weights(const io::StateDict& state, const models::VitConfig& src, const models::VitConfig& dst,
                                 const VitSelection& sel, const std::string& source,
                                 const std::function<bool(const std::string&)>& skip) {
  check_vit_selectable(src, dst, source);
  const auto& ch = sel.channels;
  check<ConfigError>(static_cast<int64_t>(ch.size()) == dst.embed_dim, "{}: {} channels selected for width {}", source,
                     ch.size(), dst.embed_dim);
  const int64_t hd = src.embed_dim / src.num_heads;
  static const std::regex block_re(R"(^blocks\.(\d{1,9})\.(.*)$)");
  io::StateDict out;
  for (const auto& item : state) {
    const std::string& key = item.key();
    const auto& t = item.value();
    if (skip && skip(key)) {
      continue;
    }
    torch::Tensor v;
    std::smatch m;
    if (key == "cls_token" || key == "pos_embed" || key == "reg_token") {
      v = pick(t, -1, ch);
    } else if (key == "patch_embed.proj.weight" || key == "patch_embed.proj.bias") {
      v = pick(t, 0, ch);
    } else if (key == "norm.weight" || key == "norm.bias" || key == "fc_norm.weight" || key == "fc_norm.bias") {
      v = pick(t, 0, ch);
    } else if (key == "head.weight" || key == "head.bias") {
      if (t.size(0) != dst.num_classes) {
        continue;  // a new task: the head keeps its initialisation
      }
      v = key == "head.weight" ? pick(t, 1, ch) : t;
    } else if (std::regex_match(key, m, block_re)) {
      const int64_t b = std::stoll(m[1]);
      const std::string rest = m[2];
      if (rest.rfind("norm1.", 0) == 0 || rest.rfind("norm2.", 0) == 0 || rest == "ls1.gamma" || rest == "ls2.gamma") {
        v = pick(t, 0, ch);
      } else if (rest.rfind("attn.", 0) == 0) {
        auto it = sel.heads.find(b);
        check<ConfigError>(it != sel.heads.end(), "{}: no heads selected for block {}", source, b);
        if (rest == "attn.qkv.weight") {
          v = pick(pick(t, 0, qkv_rows(it->second, hd, src.embed_dim)), 1, ch);
        } else if (rest == "attn.qkv.bias") {
          v = pick(t, 0, qkv_rows(it->second, hd, src.embed_dim));
        } else if (rest == "attn.proj.weight") {
          v = pick(pick(t, 0, ch), 1, head_channels(it->second, hd));
        } else if (rest == "attn.proj.bias") {
          v = pick(t, 0, ch);
        }
      } else if (rest.rfind("mlp.", 0) == 0) {
        auto it = sel.units.find(b);
        check<ConfigError>(it != sel.units.end(), "{}: no hidden units selected for block {}", source, b);
        const auto& u = it->second;
        const double scale = sel.rescale ? static_cast<double>(src.mlp_hidden()) / static_cast<double>(u.size()) : 1.0;
        if (rest == "mlp.fc1.weight") {
          v = pick(pick(t, 0, u), 1, ch);
        } else if (rest == "mlp.fc1.bias") {
          v = pick(t, 0, u);
        } else if (rest == "mlp.fc2.weight") {
          v = pick(pick(t, 0, ch), 1, u) * scale;
        } else if (rest == "mlp.fc2.bias") {
          v = pick(t, 0, ch);
        }
      }
    }
    check<CheckpointError>(v.defined(), "{}: does not know how to narrow '{}' {} (not a timm ViT tensor)", source, key,
                           io::shape_string(t));
    out.insert(key, v);
  }
  return out;
}

}  // namespace moejet::recycle
