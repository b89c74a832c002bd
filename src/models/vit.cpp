#include "moejet/models/vit.h"
#include "moejet/nn/dropout.h"
#include "moejet/nn/init.h"

#include <regex>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/kernels/attention.h"
#include "moejet/kernels/layer_norm.h"
#include "moejet/kernels/matmul.h"
#include "moejet/models/vit_checkpoint.h"
#include "moejet/nn/products.h"

namespace moejet::models {

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch_size) {
  proj = register_module("proj",
                         torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans, dim, patch_size).stride(patch_size)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& images) {
  const int64_t p = proj->options.kernel_size()->at(0);
  if (images.dim() != 4 || images.size(1) != proj->weight.size(1) || images.size(2) % p != 0 ||
      images.size(3) % p != 0) {
    return nn::conv2d(*proj, images).flatten(2).transpose(1, 2);  // the convolution's own checks and errors
  }
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  // Stride = kernel: the convolution is one GEMM of the patches, [B*N, C*p*p] x [C*p*p, D], in
  // the weight's (C, p, p) order. Its weight gradient is then a GEMM too, where the convolution's
  // backward (oneDNN's, in bf16) took 7% of a ViT-T train step.
  auto patches =
      images.reshape({B, C, H / p, p, W / p, p}).permute({0, 2, 4, 1, 3, 5}).reshape({B, (H / p) * (W / p), C * p * p});
  return kernels::linear(patches, proj->weight.reshape({proj->weight.size(0), C * p * p}), proj->bias);
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t num_heads, bool qkv_bias, double attn_drop, double proj_drop)
    : num_heads(num_heads), attn_drop(attn_drop), proj_drop(proj_drop) {
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(qkv_bias)));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  const int64_t hd = D / num_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto packed = nn::linear(*qkv, x, kernels::ProductOut::compute);
  torch::Tensor out;
  if (kernels::fused_attention(packed) && !(attn_drop > 0 && is_training())) {
    out = kernels::attention(packed, num_heads, scale);
  } else {
    // [B, N, 3, H, hd] -> [3, B, H, N, hd]
    // unbind, not three selects: its backward is one stack instead of three full-size zero
    // tensors with a slice copied into each (~5% of a small ViT's train step).
    auto qkv_t = packed.reshape({B, N, 3, num_heads, hd}).permute({2, 0, 3, 1, 4}).unbind(0);
    const auto& q = qkv_t[0];
    const auto& k = qkv_t[1];
    const auto& v = qkv_t[2];
    // Scaling q (N x hd) rather than the N x N scores saves work for N > hd.
    // In bf16, q, k, v, the scores and the probabilities stay bf16 (kernels::ProductOut): each
    // only feeds a bf16 product; softmax computes in fp32 inside.
    auto attn = kernels::matmul(q * scale, k.transpose(-2, -1), kernels::ProductOut::compute);
    attn = attn.softmax(-1);
    if (attn_drop > 0) {
      attn = nn::dropout(attn, attn_drop, is_training());
    }
    out = kernels::matmul(attn, v, kernels::ProductOut::compute).transpose(1, 2).reshape({B, N, D});
  }
  if (on_context) {
    on_context(out);
  }
  out = nn::linear(*proj, out);
  if (proj_drop > 0) {
    out = nn::dropout(out, proj_drop, is_training());
  }
  return out;
}

BlockImpl::BlockImpl(const VitConfig& c, double drop_path_rate) : drop_path_rate(drop_path_rate) {
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.embed_dim}).eps(c.norm_eps)); };
  norm1 = register_module("norm1", ln());
  attn = register_module("attn", Attention(c.embed_dim, c.num_heads, c.qkv_bias, c.attn_drop_rate, c.proj_drop_rate));
  if (c.init_values > 0) {
    ls1 = register_module("ls1", nn::LayerScale(c.embed_dim, c.init_values));
  }
  norm2 = register_module("norm2", ln());
  mlp = register_module("mlp", std::make_shared<nn::Mlp>(c.embed_dim, c.mlp_hidden(), c.proj_drop_rate));
  if (c.init_values > 0) {
    ls2 = register_module("ls2", nn::LayerScale(c.embed_dim, c.init_values));
  }
}

void BlockImpl::set_mlp(std::shared_ptr<nn::FeedForward> new_mlp) {
  mlp = replace_module("mlp", std::move(new_mlp));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  // The norms' outputs feed bf16 products only (qkv, a dense MLP's fc1): written in bf16 under
  // bf16 products. A MoE layer routes on its input in fp32, so it gets fp32.
  const auto norm = [](const torch::nn::LayerNorm& ln, const torch::Tensor& t, kernels::ProductOut out) {
    return kernels::layer_norm(t, ln->weight, ln->bias, ln->options.eps(), out);
  };
  auto h = attn(norm(norm1, x, kernels::ProductOut::compute));
  if (ls1) {
    h = ls1(h);
  }
  auto y = x + nn::drop_path(h, drop_path_rate, is_training());
  const bool dense_mlp = std::dynamic_pointer_cast<nn::Mlp>(mlp) != nullptr;
  h = mlp->forward(norm(norm2, y, dense_mlp ? kernels::ProductOut::compute : kernels::ProductOut::fp32));
  if (ls2) {
    h = ls2(h);
  }
  return y + nn::drop_path(h, drop_path_rate, is_training());
}

VisionTransformerImpl::VisionTransformerImpl(const VitConfig& c) : ConfiguredClassifier(c) {
  config.validate();
  patch_embed = register_module("patch_embed", PatchEmbed(c.in_chans, c.embed_dim, c.patch_size));
  if (c.class_token) {
    cls_token = register_parameter("cls_token", torch::zeros({1, 1, c.embed_dim}));
  }
  pos_embed = register_parameter("pos_embed", torch::zeros({1, c.num_prefix_tokens() + c.num_patches(), c.embed_dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) {
    // timm: drop-path rate rises linearly from 0 to drop_path_rate over the blocks.
    double dpr = c.depth > 1 ? c.drop_path_rate * static_cast<double>(i) / (c.depth - 1) : c.drop_path_rate;
    Block b(c, dpr);
    blocks->push_back(b);
    block_list.push_back(b);
  }
  install_moe_layers(
      c.moe, [&](int64_t b, std::shared_ptr<nn::FeedForward> layer) { block_list[b]->set_mlp(std::move(layer)); });
  if (c.moe.type() == "image") {
    add_image_router(c.moe, c.embed_dim, c.num_prefix_tokens(), c.global_pool == "token");
  }
  auto ln = torch::nn::LayerNormOptions({c.embed_dim}).eps(c.norm_eps);
  if (c.use_fc_norm()) {
    fc_norm = register_module("fc_norm", torch::nn::LayerNorm(ln));
  } else {
    norm = register_module("norm", torch::nn::LayerNorm(ln));
  }
  if (c.num_classes > 0) {
    head = register_module("head", torch::nn::Linear(c.embed_dim, c.num_classes));
  }
  init_weights();
}

void VisionTransformerImpl::init_weights() {
  // timm's init_weights_vit_timm: trunc-normal(.02) Linear weights, zero biases, trunc-normal(.02)
  // pos_embed, normal(1e-6) cls_token; the patch conv keeps PyTorch's default init.
  torch::NoGradGuard guard;
  nn::trunc_normal_(pos_embed, 0.02);
  if (cls_token.defined()) {
    cls_token.normal_(0.0, 1e-6);
  }
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      nn::trunc_normal_(lin->weight, 0.02);
      if (lin->bias.defined()) {
        lin->bias.zero_();
      }
    }
  }
}

torch::Tensor VisionTransformerImpl::embed(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4, "VisionTransformer: expected images [B, C, H, W], got ", images.sizes());
  TORCH_CHECK(
      images.size(1) == config.in_chans && images.size(2) == config.img_size && images.size(3) == config.img_size,
      "VisionTransformer: expected images [B, ", config.in_chans, ", ", config.img_size, ", ", config.img_size,
      "], got ", images.sizes());
  auto x = patch_embed(images);
  if (cls_token.defined()) {
    x = torch::cat({cls_token.expand({x.size(0), -1, -1}), x}, 1);
  }
  x = x + pos_embed;
  if (config.pos_drop_rate > 0) {
    x = nn::dropout(x, config.pos_drop_rate, is_training());
  }
  return x;
}

torch::Tensor VisionTransformerImpl::forward_features(const torch::Tensor& images) {
  auto x = embed(images);
  const int64_t first_moe = moe_layer_list.empty() ? -1 : moe_layer_list.front().first;
  for (int64_t i = 0; i < static_cast<int64_t>(block_list.size()); ++i) {
    if (router && i == first_moe) {
      route_images(x);
    }
    x = block_list[i](x);
  }
  return norm ? norm(x) : x;
}

torch::Tensor VisionTransformerImpl::forward_head(const torch::Tensor& tokens, bool pre_logits) {
  torch::Tensor x;
  if (config.global_pool == "avg") {
    x = tokens.slice(1, config.num_prefix_tokens()).mean(1);
  } else {
    x = tokens.select(1, 0);
  }
  if (fc_norm) {
    x = fc_norm(x);
  }
  if (config.drop_rate > 0) {
    x = nn::dropout(x, config.drop_rate, is_training());
  }
  if (pre_logits || !head) {
    return x;
  }
  return nn::linear(*head, x);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  return forward_head(forward_features(images));
}

std::string VisionTransformerImpl::mlp_key(int64_t block) const {
  return fmt::format("blocks.{}.mlp", block);
}

std::string VisionTransformerImpl::mlp_norm_key(int64_t block) const {
  return fmt::format("blocks.{}.norm2", block);
}

std::shared_ptr<nn::FeedForward> VisionTransformerImpl::block_mlp(int64_t block) const {
  TORCH_CHECK(block >= 0 && block < static_cast<int64_t>(block_list.size()), "block ", block, " out of range");
  return block_list[block]->mlp;
}

io::StateDict VisionTransformerImpl::adapt_checkpoint(const io::StateDict& state,
                                                      std::vector<std::string>* notes) const {
  return filter_vit_checkpoint(state, config, "bicubic", notes);
}

std::vector<std::string> VisionTransformerImpl::no_weight_decay() const {
  return {"pos_embed", "cls_token"};
}

int64_t VisionTransformerImpl::layer_id(const std::string& name) const {
  static const std::regex block_re(R"(^blocks\.(\d+)\.)");
  std::smatch m;
  if (std::regex_search(name, m, block_re)) {
    return std::stoll(m[1]) + 1;
  }
  if (name.rfind("cls_token", 0) == 0 || name.rfind("pos_embed", 0) == 0 || name.rfind("patch_embed", 0) == 0) {
    return 0;
  }
  return config.depth + 1;
}

std::vector<std::pair<std::string, double>> VisionTransformerImpl::macs_by_layer() const {
  // Multiply-accumulates of the matmul-like ops, the convention of fvcore and of the papers'
  // tables (ViT-T/16 at 224: 1.26 G). Norms, softmax and GELU are not counted.
  const double N = static_cast<double>(config.num_patches() + config.num_prefix_tokens());
  const double D = static_cast<double>(config.embed_dim);
  const double P = static_cast<double>(config.patch_size);
  std::vector<std::pair<std::string, double>> out;
  out.emplace_back("patch_embed", static_cast<double>(config.num_patches()) * config.in_chans * P * P * D);
  for (size_t i = 0; i < block_list.size(); ++i) {
    double attn = N * D * 3 * D + 2 * N * N * D + N * D * D;
    out.emplace_back(fmt::format("blocks.{}.attn", i), attn);
    out.emplace_back(fmt::format("blocks.{}.mlp", i), block_list[i]->mlp->macs(static_cast<int64_t>(N)));
  }
  if (router) {
    out.emplace_back("router", D * static_cast<double>(config.moe.get<moe::PerImageMoeOptions>().num_experts));
  }
  if (config.num_classes > 0) {
    out.emplace_back("head", D * static_cast<double>(config.num_classes));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> VisionTransformerImpl::summary_lines() const {
  const auto& v = config;
  return {{"model", fmt::format("ViT d={} depth={} heads={} patch={} img={} classes={}", v.embed_dim, v.depth,
                                v.num_heads, v.patch_size, v.img_size, v.num_classes)},
          {"tokens", fmt::format("{} ({} patches + {} prefix)", v.num_patches() + v.num_prefix_tokens(),
                                 v.num_patches(), v.num_prefix_tokens())}};
}

}  // namespace moejet::models
