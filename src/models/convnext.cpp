#include "moejet/models/convnext.h"
#include "moejet/nn/dropout.h"
#include "moejet/nn/init.h"

#include <regex>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/kernels/matmul.h"
#include "moejet/nn/products.h"

namespace moejet::models {

namespace F = torch::nn::functional;

void ConvNextConfig::validate() const {
  check<ConfigError>(depths.size() == 4 && dims.size() == 4,
                     "model: ConvNeXt needs 4 stages (depths and dims of length 4), got {} and {}", depths.size(),
                     dims.size());
  for (size_t i = 0; i < 4; ++i) {
    check<ConfigError>(depths[i] >= 1 && dims[i] >= 1 && depths[i] <= 1024 && dims[i] <= 65536,
                       "model: stage {} has depth {} and dim {} (expected 1..1024 and 1..65536)", i, depths[i],
                       dims[i]);
  }
  check<ConfigError>(in_chans > 0 && num_classes >= 0 && mlp_ratio > 0 && kernel_size % 2 == 1,
                     "model: invalid ConvNeXt sizes (in_chans {}, num_classes {}, mlp_ratio {}, kernel {})", in_chans,
                     num_classes, mlp_ratio, kernel_size);
  check<ConfigError>(
      img_size > 0 && img_size <= 16384 && in_chans <= 1024 && num_classes <= 10000000 && mlp_ratio <= 64,
      "model: sizes beyond any ConvNeXt (img_size {} in 1..16384, in_chans {} <= 1024, num_classes {} "
      "<= 10^7, mlp_ratio {} <= 64)",
      img_size, in_chans, num_classes, mlp_ratio);
  for (size_t i = 0; i < 4; ++i) {
    check<ConfigError>(static_cast<int64_t>(static_cast<double>(dims[i]) * mlp_ratio) >= 1,
                       "model.mlp_ratio: {} x stage {}'s dim {} gives an MLP of no hidden units; it needs at least 1",
                       mlp_ratio, i, dims[i]);
  }
  check<ConfigError>(img_size % 32 == 0, "model.img_size: ConvNeXt downsamples by 32; {} is not a multiple", img_size);
  moe.validate(total_blocks());
}

int64_t ConvNextConfig::total_blocks() const {
  int64_t n = 0;
  for (auto d : depths)
    n += d;
  return n;
}

std::pair<int64_t, int64_t> ConvNextConfig::locate(int64_t block) const {
  int64_t start = 0;
  for (size_t s = 0; s < depths.size(); ++s) {
    if (block < start + depths[s]) {
      return {static_cast<int64_t>(s), block - start};
    }
    start += depths[s];
  }
  throw ConfigError(fmt::format("ConvNeXt block {} out of range (the model has {} blocks)", block, start));
}

void to_json(json& j, const ConvNextConfig& c) {
  j = config_to_json(c);
  j["arch"] = "convnext";
  if (c.moe.enabled()) {
    j["moe"] = c.moe;
  }
}

namespace {

// timm's ConvNeXt variants (depths, dims), smallest first.
const std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, std::vector<int64_t>>>>& convnext_presets() {
  static const std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, std::vector<int64_t>>>> table = {
      {"convnext_atto", {{2, 2, 6, 2}, {40, 80, 160, 320}}},  {"convnext_femto", {{2, 2, 6, 2}, {48, 96, 192, 384}}},
      {"convnext_pico", {{2, 2, 6, 2}, {64, 128, 256, 512}}}, {"convnext_nano", {{2, 2, 8, 2}, {80, 160, 320, 640}}},
      {"convnext_tiny", {{3, 3, 9, 3}, {96, 192, 384, 768}}},
  };
  return table;
}

}  // namespace

ConvNextConfig convnext_preset(const std::string& name) {
  for (const auto& [preset, shape] : convnext_presets()) {
    if (preset == name) {
      ConvNextConfig c;
      c.depths = shape.first;
      c.dims = shape.second;
      return c;
    }
  }
  throw ConfigError(
      fmt::format("unknown ConvNeXt preset '{}' (known: {})", name, fmt::join(convnext_preset_names(), ", ")));
}

std::vector<std::string> convnext_preset_names() {
  std::vector<std::string> names;
  for (const auto& entry : convnext_presets()) {
    names.push_back(entry.first);
  }
  return names;
}

ConvNextConfig convnext_config_from_json(const json& j, const std::string& path) {
  ConvNextConfig c;
  std::string preset;
  if (j.is_object()) {
    read_key(j, "preset", preset, path);
  }
  if (!preset.empty()) {
    c = convnext_preset(preset);
  }
  read_config(j, c, path, {"arch", "preset", "moe"});
  if (j.contains("moe") && !j.at("moe").is_null()) {
    c.moe = moe::moe_config_from_json(j.at("moe"), path + ".moe");
  }
  c.validate();
  return c;
}

LayerNorm2dImpl::LayerNorm2dImpl(int64_t channels, double eps) : eps(eps) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor LayerNorm2dImpl::forward(const torch::Tensor& x) {
  auto y = x.permute({0, 2, 3, 1});
  y = F::layer_norm(y, F::LayerNormFuncOptions({weight.size(0)}).weight(weight).bias(bias).eps(eps));
  return y.permute({0, 3, 1, 2});
}

void ConvNextBlockImpl::set_mlp(std::shared_ptr<nn::FeedForward> new_mlp) {
  mlp = replace_module("mlp", std::move(new_mlp));
}

ConvNextBlockImpl::ConvNextBlockImpl(int64_t dim, const ConvNextConfig& c, double drop_path_rate)
    : drop_path_rate(drop_path_rate) {
  conv_dw = register_module(
      "conv_dw",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, c.kernel_size).padding(c.kernel_size / 2).groups(dim)));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(c.norm_eps)));
  auto m = std::make_shared<nn::Mlp>(dim, static_cast<int64_t>(static_cast<double>(dim) * c.mlp_ratio));
  mlp = register_module("mlp", m);
  if (c.ls_init_value > 0) {
    gamma = register_parameter("gamma", torch::full({dim}, c.ls_init_value));
  }
}

torch::Tensor ConvNextBlockImpl::forward(const torch::Tensor& x) {
  auto y = norm(nn::conv2d(*conv_dw, x).permute({0, 2, 3, 1}));  // channels-last for the norm and the MLP
  // The MLP slot sees [B, H*W, C] tokens, as a ViT block's (MoE layers mix positions of an image).
  const auto shape = y.sizes().vec();
  y = mlp->forward(y.reshape({shape[0], shape[1] * shape[2], shape[3]})).view(shape);
  if (gamma.defined()) {
    y = y * gamma;
  }
  return x + nn::drop_path(y.permute({0, 3, 1, 2}), drop_path_rate, is_training());
}

namespace {

// A stem or downsample Sequential, its convolutions through the product dispatch.
torch::Tensor run_sequential(torch::nn::SequentialImpl& seq, torch::Tensor x) {
  for (auto& m : seq) {
    if (const auto* conv = m.ptr()->as<torch::nn::Conv2d>()) {
      x = nn::conv2d(*conv, x);
    } else {
      x = m.forward(x);
    }
  }
  return x;
}

// One stage: "downsample" (absent in stage 0, as timm's Identity) and "blocks".
struct StageImpl : torch::nn::Module {
  torch::nn::Sequential downsample{nullptr};
  torch::nn::Sequential blocks{nullptr};
};
TORCH_MODULE(Stage);

struct HeadImpl : torch::nn::Module {};

}  // namespace

ConvNextImpl::ConvNextImpl(const ConvNextConfig& c) : ConfiguredClassifier(c) {
  c.validate();
  stem = register_module(
      "stem", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_chans, c.dims[0], 4).stride(4)),
                                    LayerNorm2d(c.dims[0], c.norm_eps)));
  stages = register_module("stages", torch::nn::ModuleList());
  int64_t total = 0;
  for (auto d : c.depths)
    total += d;
  int64_t index = 0;
  blocks.resize(4);
  for (int64_t s = 0; s < 4; ++s) {
    Stage stage;
    if (s > 0) {
      stage->downsample = stage->register_module(
          "downsample",
          torch::nn::Sequential(LayerNorm2d(c.dims[s - 1], c.norm_eps),
                                torch::nn::Conv2d(torch::nn::Conv2dOptions(c.dims[s - 1], c.dims[s], 2).stride(2))));
    }
    stage->blocks = stage->register_module("blocks", torch::nn::Sequential());
    for (int64_t b = 0; b < c.depths[s]; ++b, ++index) {
      // timm: drop-path rate rises linearly over all blocks of all stages.
      const double dpr =
          total > 1 ? c.drop_path_rate * static_cast<double>(index) / static_cast<double>(total - 1) : 0.0;
      ConvNextBlock block(c.dims[s], c, dpr);
      stage->blocks->push_back(block);
      blocks[s].push_back(block);
    }
    stages->push_back(stage);
  }
  install_moe_layers(c.moe, [&](int64_t block, std::shared_ptr<nn::FeedForward> layer) {
    auto [s, b] = c.locate(block);
    blocks[s][b]->set_mlp(std::move(layer));
  });
  if (c.moe.type() == "image") {
    add_image_router(c.moe, block_dim(moe_layer_list.front().first), /*prefix_tokens=*/0,
                     /*pool_class_token=*/false);
  }
  auto head = register_module("head", std::make_shared<HeadImpl>());
  head_norm =
      head->register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dims[3]}).eps(c.norm_eps)));
  if (c.num_classes > 0) {
    head_fc = head->register_module("fc", torch::nn::Linear(c.dims[3], c.num_classes));
  }
  // timm's _init_weights: trunc-normal(.02) conv and linear weights, zero biases.
  torch::NoGradGuard ng;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      nn::trunc_normal_(conv->weight, 0.02);
      conv->bias.zero_();
    } else if (auto* lin = m->as<torch::nn::Linear>()) {
      nn::trunc_normal_(lin->weight, 0.02);
      if (lin->bias.defined()) {
        lin->bias.zero_();
      }
    }
  }
}

torch::Tensor ConvNextImpl::forward_features(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == config.in_chans, "ConvNeXt: expected images [B, ", config.in_chans,
              ", H, W], got ", images.sizes());
  auto x = run_sequential(*stem, images);
  const int64_t first_moe = moe_layer_list.empty() ? -1 : moe_layer_list.front().first;
  int64_t index = 0;
  for (size_t s = 0; s < stages->size(); ++s) {
    auto* stage = (*stages)[s]->as<StageImpl>();
    if (stage->downsample) {
      x = run_sequential(*stage->downsample, x);
    }
    for (auto& block : blocks[s]) {
      if (router && index == first_moe) {
        route_images(x.flatten(2).transpose(1, 2));  // [B, H*W, C] positions as tokens
      }
      x = block(x);
      ++index;
    }
  }
  return x;
}

torch::Tensor ConvNextImpl::forward_head(const torch::Tensor& features, bool pre_logits) {
  auto x = head_norm(features.mean({2, 3}));
  if (config.drop_rate > 0) {
    x = nn::dropout(x, config.drop_rate, is_training());
  }
  return pre_logits || !head_fc ? x : nn::linear(*head_fc, x);
}

torch::Tensor ConvNextImpl::forward(const torch::Tensor& images) {
  return forward_head(forward_features(images));
}

std::string ConvNextImpl::mlp_key(int64_t block) const {
  auto [s, b] = config.locate(block);
  return fmt::format("stages.{}.blocks.{}.mlp", s, b);
}

std::string ConvNextImpl::mlp_norm_key(int64_t block) const {
  auto [s, b] = config.locate(block);
  return fmt::format("stages.{}.blocks.{}.norm", s, b);
}

std::shared_ptr<nn::FeedForward> ConvNextImpl::block_mlp(int64_t block) const {
  auto [s, b] = config.locate(block);
  return blocks[s][b]->mlp;
}

io::StateDict ConvNextImpl::adapt_checkpoint(const io::StateDict& state, std::vector<std::string>* notes) const {
  static const std::regex conv_mlp_re(R"(^stages\.\d+\.blocks\.\d+\.mlp\.fc[12]\.weight$)");
  io::StateDict out;
  int64_t converted = 0;
  for (const auto& item : state) {
    const auto& v = item.value();
    if (v.dim() == 4 && v.size(2) == 1 && v.size(3) == 1 && std::regex_match(item.key(), conv_mlp_re)) {
      out.insert(item.key(), v.flatten(1));
      ++converted;
    } else {
      out.insert(item.key(), v);
    }
  }
  if (notes && converted > 0) {
    notes->push_back(fmt::format(
        "timm ConvNeXt conv_mlp layout: {} 1x1-conv MLP weights [out, in, 1, 1] read as Linear [out, in]", converted));
  }
  return out;
}

int64_t ConvNextImpl::block_dim(int64_t block) const {
  return config.dims[config.locate(block).first];
}

int64_t ConvNextImpl::layer_id(const std::string& name) const {
  static const std::regex block_re(R"(^stages\.(\d+)\.blocks\.(\d+)\.)");
  static const std::regex down_re(R"(^stages\.(\d+)\.downsample\.)");
  std::smatch m;
  auto stage_start = [&](int64_t s) {
    int64_t start = 0;
    for (int64_t i = 0; i < s; ++i)
      start += config.depths[i];
    return start;
  };
  if (std::regex_search(name, m, block_re)) {
    return stage_start(std::stoll(m[1])) + std::stoll(m[2]) + 1;
  }
  if (std::regex_search(name, m, down_re)) {
    return stage_start(std::stoll(m[1])) + 1;
  }
  if (name.rfind("stem", 0) == 0) {
    return 0;
  }
  return config.total_blocks() + 1;
}

std::vector<std::pair<std::string, double>> ConvNextImpl::macs_by_layer() const {
  const auto& c = config;
  std::vector<std::pair<std::string, double>> out;
  double side = static_cast<double>(c.img_size) / 4.0;
  out.emplace_back("stem", side * side * static_cast<double>(c.in_chans * c.dims[0] * 16));
  for (int64_t s = 0; s < 4; ++s) {
    const double C = static_cast<double>(c.dims[s]);
    if (s > 0) {
      side /= 2.0;
      out.emplace_back(fmt::format("stages.{}.downsample", s),
                       side * side * 4.0 * static_cast<double>(c.dims[s - 1]) * C);
    }
    const double hw = side * side;
    for (int64_t b = 0; b < c.depths[s]; ++b) {
      const double k = static_cast<double>(c.kernel_size);
      out.emplace_back(fmt::format("stages.{}.blocks.{}.conv_dw", s, b), hw * C * k * k);
      out.emplace_back(fmt::format("stages.{}.blocks.{}.mlp", s, b), blocks[s][b]->mlp->macs(static_cast<int64_t>(hw)));
    }
  }
  if (router) {
    out.emplace_back("router", static_cast<double>(block_dim(moe_layer_list.front().first) *
                                                   c.moe.get<moe::PerImageMoeOptions>().num_experts));
  }
  if (c.num_classes > 0) {
    out.emplace_back("head", static_cast<double>(c.dims[3] * c.num_classes));
  }
  return out;
}

std::string ConvNextImpl::block_label(int64_t block) const {
  return fmt::format("{} ({}, width {})", block, mlp_key(block), block_dim(block));
}

std::vector<std::pair<std::string, std::string>> ConvNextImpl::summary_lines() const {
  return {{"model", fmt::format("ConvNeXt depths={} dims={} img={} classes={}", fmt::join(config.depths, ","),
                                fmt::join(config.dims, ","), config.img_size, config.num_classes)}};
}

}  // namespace moejet::models
