// Training: schedule, parameter groups, soft-target loss, config parsing, metrics log,
// checkpoint round trip, exact resume and the NaN guard.

#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <tuple>

#include "moejet/core/fs.h"
#include "moejet/data/superclasses.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/kernels/bf16_cast.h"
#include "moejet/kernels/bf16_weights.h"
#include "moejet/kernels/precision.h"
#include "moejet/models/model_config.h"
#include "moejet/models/vit.h"
#include "moejet/train/checkpoint.h"
#include "moejet/train/fused_adamw.h"
#include "moejet/train/metrics_log.h"
#include "moejet/train/optimizer.h"
#include "moejet/train/run_dir.h"
#include "moejet/train/step_timing.h"
#include "moejet/train/trainer.h"
#include "test_util.h"

using namespace moejet;
using namespace moejet::train;
using moejet::testing::throws_error;

TEST(LrSchedule, LinearWarmupThenCosineToMinLr) {
  OptimConfig o;
  o.lr = 1.0;
  o.warmup_lr = 0.0;
  o.min_lr = 0.1;
  LrSchedule s(o, 110, 10);
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(5), 0.5);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);  // halfway through the cosine: (1 + 0.1) / 2
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  for (int64_t t = 11; t <= 110; ++t) {
    EXPECT_LE(s.at(t), s.at(t - 1) + 1e-15) << t;  // monotone after warm-up
  }
  // The authors' by-epoch cosine (10 steps an epoch, 1 warm-up epoch, 11 epochs): the lr of epoch
  // e >= 1 is the cosine at (e - 1) / 10 for all its steps.
  o.sched_unit = "epoch";
  LrSchedule e(o, 110, 10, 10);
  EXPECT_DOUBLE_EQ(e.at(5), 0.5);  // warm-up still per step
  for (int64_t t = 10; t < 20; ++t)
    EXPECT_DOUBLE_EQ(e.at(t), 1.0) << t;
  for (int64_t t = 60; t < 70; ++t)
    EXPECT_NEAR(e.at(t), 0.55, 1e-12) << t;
  EXPECT_NEAR(e.at(109), s.at(100), 1e-12);
  EXPECT_THROW(LrSchedule(o, 110, 10), ConfigError);
  o.sched_unit = "step";
  o.sched = "constant";
  LrSchedule c(o, 100, 0);
  EXPECT_DOUBLE_EQ(c.at(0), 1.0);
  EXPECT_DOUBLE_EQ(c.at(99), 1.0);
}

TEST(Optimizer, NoDecayOnNormsBiasesTokensAndLayerDecayScales) {
  auto c = moejet::testing::tiny_vit();
  c.embed_dim = 8;
  models::VisionTransformer m(c);
  OptimConfig o;
  o.weight_decay = 0.05;
  o.layer_decay = 0.5;
  o.weight_decay_groups = "timm";
  auto bundle = make_optimizer(*m, o);
  size_t num_params = m->named_parameters().size();
  std::map<std::string, std::pair<double, double>> seen;  // name -> (wd, lr scale)
  size_t total = 0;
  for (auto& g : bundle.groups) {
    for (auto& n : g.names) {
      seen[n] = {g.weight_decay, g.lr_scale};
      ++total;
    }
  }
  EXPECT_EQ(total, num_params);
  EXPECT_EQ(seen["blocks.0.norm1.weight"].first, 0.0);
  EXPECT_EQ(seen["blocks.0.attn.qkv.bias"].first, 0.0);
  EXPECT_EQ(seen["pos_embed"].first, 0.0);
  EXPECT_EQ(seen["cls_token"].first, 0.0);
  EXPECT_EQ(seen["blocks.0.attn.qkv.weight"].first, 0.05);
  EXPECT_EQ(seen["head.weight"].first, 0.05);
  // depth 2 -> 4 layer ids; head at the top (scale 1), block 1 at 0.5, block 0 at 0.25, stem 0.125.
  EXPECT_DOUBLE_EQ(seen["head.weight"].second, 1.0);
  EXPECT_DOUBLE_EQ(seen["blocks.1.mlp.fc1.weight"].second, 0.5);
  EXPECT_DOUBLE_EQ(seen["blocks.0.mlp.fc1.weight"].second, 0.25);
  EXPECT_DOUBLE_EQ(seen["patch_embed.proj.weight"].second, 0.125);
  bundle.set_lr(2.0);
  for (size_t i = 0; i < bundle.groups.size(); ++i) {
    EXPECT_DOUBLE_EQ(bundle.optimizer->param_groups()[i].options().get_lr(), 2.0 * bundle.groups[i].lr_scale);
  }
}

std::map<std::string, std::pair<double, double>> group_of_each_param(const OptimizerBundle& bundle) {
  std::map<std::string, std::pair<double, double>> seen;  // name -> (wd, lr scale)
  for (const auto& g : bundle.groups) {
    for (const auto& n : g.names) {
      seen[n] = {g.weight_decay, g.lr_scale};
    }
  }
  return seen;
}

TEST(TrainConfig, EveryTrainingConfigParsesAndThePaperRecipesAreTheAuthors) {
  // Every training config of configs/ reads strictly; the paper's MMPretrain recipes carry the
  // authors' schedule and batch augmentation (by-epoch cosine, permuted mixing partners, 8-bit
  // erasing noise, RandAugment resampled with the pipeline's bicubic interpolation).
  int paper_recipes = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(std::string(MOEJET_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".json")
      continue;
    std::ifstream in(entry.path());
    auto j = json::parse(in);
    if (!j.contains("model") || !j.contains("train"))
      continue;  // a model config
    TrainConfig cfg;
    ASSERT_NO_THROW(cfg = train_config_from_json(j)) << entry.path();
    if (cfg.augment.randaugment.find("inc1") != std::string::npos) {
      ++paper_recipes;
      EXPECT_EQ(cfg.optim.sched_unit, "epoch") << entry.path();
      EXPECT_EQ(cfg.augment.mix_partner, "permute") << entry.path();
      EXPECT_EQ(cfg.augment.random_erasing_noise, "pixel8") << entry.path();
      EXPECT_EQ(cfg.augment.interpolation, "bicubic") << entry.path();
      EXPECT_EQ(cfg.augment.randaugment_interpolation, "") << entry.path();
    }
  }
  EXPECT_EQ(paper_recipes, 5);
}

TEST(Optimizer, VJetMoeTinyPaperRecipeHasTheAuthorsLayerDecayAndWeightDecayGroups) {
  // configs/paper/vjetmoe_tiny_in1k.json (layer decay 0.6, weight decay 0.05), with 2 + 4 experts
  // and 32-pixel images instead of 98 + 196 and 224 so that the test builds it quickly: parameter
  // names, layer ids and groups do not depend on either.
  std::ifstream in(std::string(MOEJET_SOURCE_DIR) + "/configs/paper/vjetmoe_tiny_in1k.json");
  ASSERT_TRUE(in.good());
  auto j = json::parse(in);
  j["model"]["moe"]["core_experts"] = 2;
  j["model"]["moe"]["universal_experts"] = 4;
  j["model"]["img_size"] = 32;
  auto cfg = train_config_from_json(j);
  ASSERT_EQ(cfg.optim.layer_decay, 0.6);
  ASSERT_EQ(cfg.optim.moe_layer_decay, "top");
  ASSERT_EQ(cfg.optim.weight_decay_groups, "jetpack");
  auto model = models::make_model(cfg.model);
  auto seen = group_of_each_param(make_optimizer(*model, cfg.optim));
  ASSERT_EQ(seen.size(), model->named_parameters().size());
  const double wd = 0.05;
  // The authors' get_layer_depth (vit_softmoe_timm.py): 14 layer ids, the top one (13) for the
  // head, the final norm, every MoE parameter and norm2 of the MoE blocks 6-11; block i has id
  // i + 1; patch_embed, cls_token and pos_embed id 0. Scale = 0.6 ^ (13 - id).
  auto scale = [](int id) { return std::pow(0.6, 13 - id); };
  for (const char* moe_param :
       {"blocks.6.mlp.phi", "blocks.6.mlp.slot_norm.weight", "blocks.6.mlp.dispatch_temperature",
        "blocks.6.mlp.combine_temperature", "blocks.6.mlp.core.fc1.weight", "blocks.6.mlp.core.fc2.bias",
        "blocks.6.mlp.universal.fc1.weight", "blocks.11.mlp.universal.fc2.weight", "blocks.6.norm2.weight",
        "blocks.11.norm2.bias", "head.weight", "fc_norm.weight"}) {
    ASSERT_TRUE(seen.count(moe_param)) << moe_param;
    EXPECT_DOUBLE_EQ(seen[moe_param].second, 1.0) << moe_param;
  }
  EXPECT_DOUBLE_EQ(seen["blocks.6.norm1.weight"].second, scale(7));
  EXPECT_DOUBLE_EQ(seen["blocks.6.attn.qkv.weight"].second, scale(7));
  EXPECT_DOUBLE_EQ(seen["blocks.11.attn.proj.weight"].second, scale(12));
  EXPECT_DOUBLE_EQ(seen["blocks.5.norm2.weight"].second, scale(6));  // a dense block's norm2
  EXPECT_DOUBLE_EQ(seen["blocks.5.mlp.fc1.weight"].second, scale(6));
  EXPECT_DOUBLE_EQ(seen["blocks.0.mlp.fc1.weight"].second, scale(1));
  EXPECT_DOUBLE_EQ(seen["patch_embed.proj.weight"].second, scale(0));
  EXPECT_DOUBLE_EQ(seen["cls_token"].second, scale(0));
  EXPECT_DOUBLE_EQ(seen["pos_embed"].second, scale(0));
  // MMPretrain's weight-decay rule with the authors' custom keys: decayed are weights, phi, the
  // slot norm (its custom key overrides the norm rule) and cls_token; not decayed are LayerNorm
  // parameters, biases (expert biases too), pos_embed and the temperatures.
  for (const char* decayed : {"blocks.6.mlp.phi", "blocks.6.mlp.slot_norm.weight", "blocks.6.mlp.slot_norm.bias",
                              "cls_token", "blocks.6.mlp.core.fc1.weight", "blocks.6.mlp.universal.fc2.weight",
                              "blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "head.weight"}) {
    EXPECT_EQ(seen[decayed].first, wd) << decayed;
  }
  for (const char* undecayed :
       {"pos_embed", "blocks.6.mlp.dispatch_temperature", "blocks.6.mlp.combine_temperature",
        "blocks.6.mlp.core.fc1.bias", "blocks.6.mlp.universal.fc2.bias", "blocks.6.norm2.weight", "blocks.0.norm1.bias",
        "blocks.0.attn.qkv.bias", "patch_embed.proj.bias", "fc_norm.weight", "head.bias"}) {
    EXPECT_EQ(seen[undecayed].first, 0.0) << undecayed;
  }

  // moejet's alternatives: MoE parameters decay with their block, timm's weight-decay rule.
  cfg.optim.moe_layer_decay = "block";
  cfg.optim.weight_decay_groups = "timm";
  auto alt = group_of_each_param(make_optimizer(*model, cfg.optim));
  EXPECT_DOUBLE_EQ(alt["blocks.6.mlp.phi"].second, scale(7));
  EXPECT_DOUBLE_EQ(alt["blocks.6.mlp.core.fc1.weight"].second, scale(7));
  EXPECT_DOUBLE_EQ(alt["blocks.11.norm2.weight"].second, scale(12));
  EXPECT_EQ(alt["cls_token"].first, 0.0);
  EXPECT_EQ(alt["blocks.6.mlp.slot_norm.weight"].first, 0.0);
  EXPECT_EQ(alt["blocks.6.mlp.phi"].first, wd);
}

TEST(Loss, SoftTargetCrossEntropyMatchesCrossEntropyAndSmoothing) {
  auto logits = torch::randn({6, 4});
  auto labels = torch::tensor({0, 1, 2, 3, 0, 1});
  auto onehot = torch::one_hot(labels, 4).to(torch::kFloat);
  auto ce = torch::nn::functional::cross_entropy(logits, labels);
  EXPECT_NEAR(soft_target_cross_entropy(logits, onehot).item<double>(), ce.item<double>(), 1e-6);
  // Label smoothing 0.1 as torch's CrossEntropyLoss(label_smoothing=0.1).
  auto smooth = onehot * 0.9 + 0.1 / 4;
  auto ref = torch::nn::functional::cross_entropy(
      logits, labels, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.1));
  EXPECT_NEAR(soft_target_cross_entropy(logits, smooth).item<double>(), ref.item<double>(), 1e-6);
}

TEST(TrainConfigJson, RoundTripsAndNamesUnknownKeys) {
  TrainConfig c;
  c.model.as<models::VitConfig>().num_classes = 10;
  c.optim.lr = 3e-4;
  c.data.classes = {1, 2};
  c.augment.hflip = 0.5;
  json j = to_json(c);
  EXPECT_EQ(to_json(train_config_from_json(j)), j);
  json bad = j;
  bad["optim"]["lerning_rate"] = 1;
  EXPECT_TRUE(throws_error<ConfigError>([&] { train_config_from_json(bad); }, {"optim.lerning_rate"}));
  json neg = j;
  neg["optim"]["lr"] = -1;
  EXPECT_THROW(train_config_from_json(neg), ConfigError);
  json type = j;
  type["train"]["epochs"] = "ten";
  EXPECT_TRUE(throws_error<ConfigError>([&] { train_config_from_json(type); }, {"train.epochs"}));
}

TEST(TrainConfigJson, NonsenseValuesAreErrorsNotSilentlyChanged) {
  auto rejects = [](const std::function<void(json&)>& edit, const std::string& what) {
    json j = to_json(TrainConfig{});
    edit(j);
    EXPECT_TRUE(throws_error<ConfigError>([&] { train_config_from_json(j); }, {})) << what;
  };
  rejects([](json& j) { j["train"]["epochs"] = 1.5; }, "fractional epochs (would truncate to 1)");
  rejects([](json& j) { j["train"]["epochs"] = 4611686018427387904LL; }, "2^62 epochs (steps overflow to 0)");
  rejects([](json& j) { j["train"]["batch_size"] = -5; }, "a negative batch");
  rejects([](json& j) { j["train"]["eval_batch_size"] = -1; }, "a negative evaluation batch");
  rejects([](json& j) { j["optim"]["min_lr"] = -1e-5; }, "a negative min_lr");
  rejects([](json& j) { j["optim"]["warmup_lr"] = -1e-5; }, "a negative warmup_lr");
  rejects([](json& j) { j["data"]["eval_limit"] = -3; }, "a negative eval_limit");
  rejects([](json& j) { j["train"]["threads"] = 100000; }, "100000 threads");
  rejects([](json& j) { j["train"]["precision"] = "fp16"; }, "an unsupported precision");
  rejects([](json& j) { j["model"]["moe"] = {{"type", "soft"}, {"layers", {1, 1}}}; }, "a block listed twice");
  rejects(
      [](json& j) {
        j["model"]["moe"] = {{"type", "topk"}, {"layers", {1}}, {"capacity_factor", 0}};
      },
      "capacity 0");
  json ok = to_json(TrainConfig{});
  ok["train"]["epochs"] = 3.0;  // a whole number written as a float is fine
  EXPECT_EQ(train_config_from_json(ok).train.epochs, 3);

  // Duplicate keys (nlohmann keeps the last silently) and absurd nesting in a file.
  moejet::testing::TempDir tmp;
  { std::ofstream(tmp.file("dup.json")) << R"({"train": {"epochs": 2, "epochs": 5}})"; }
  EXPECT_TRUE(throws_error<ConfigError>([&] { read_json_file(tmp.file("dup.json")); }, {"'epochs' appears twice"}));
  { std::ofstream(tmp.file("deep.json")) << std::string(100000, '[') << std::string(100000, ']'); }
  EXPECT_THROW(read_json_file(tmp.file("deep.json")), ConfigError);
}

TEST(MetricsLog, ResumeDropsLinesBeyondTheCheckpointStep) {
  moejet::testing::TempDir dir;
  auto path = dir.file("m.jsonl");
  {
    MetricsLog log(path);
    for (int s = 1; s <= 5; ++s) {
      log.write({{"event", "train"}, {"step", s}});
    }
  }
  {
    MetricsLog log(path, 3);
    log.write({{"event", "train"}, {"step", 4}, {"again", true}});
  }
  std::ifstream in(path);
  std::vector<json> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(json::parse(line));
  }
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3]["step"], 4);
  EXPECT_TRUE(lines[3]["again"].get<bool>());
}

namespace {

// A tiny but complete config: real Fashion-MNIST (a stratified subset), augmentation with random
// crops, flips and mixup, drop path (uses the torch RNG), AdamW with warm-up and cosine.
TrainConfig tiny_config(const std::string& out) {
  TrainConfig c;
  c.model.as<models::VitConfig>().img_size = 28;
  c.model.as<models::VitConfig>().patch_size = 7;
  c.model.as<models::VitConfig>().in_chans = 1;
  c.model.as<models::VitConfig>().num_classes = 10;
  c.model.as<models::VitConfig>().embed_dim = 16;
  c.model.as<models::VitConfig>().depth = 2;
  c.model.as<models::VitConfig>().num_heads = 2;
  c.model.as<models::VitConfig>().drop_path_rate = 0.1;
  c.data.train_limit = 192;
  c.data.eval_limit = 100;
  c.data.num_workers = 2;
  c.augment.random_crop_padding = 2;
  c.augment.hflip = 0.5;
  c.augment.mixup_alpha = 0.2;
  c.optim.lr = 2e-3;
  c.optim.warmup_epochs = 1;
  c.train.epochs = 3;
  c.train.batch_size = 32;
  c.train.accum_steps = 2;
  c.optim.clip_grad = 1.0;
  c.train.out_dir = out;
  c.train.log_every = 1;
  return c;
}

bool have_fashion_mnist() {
  try {
    data::open_dataset("fashion-mnist", "test");
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

TEST(Trainer, ResumeContinuesExactlyAsAnUninterruptedRun) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  moejet::testing::TempDir dir;
  TrainOptions quiet;
  torch::manual_seed(123);  // the trainer must not depend on the global seed before it
  auto full = run_training(tiny_config(dir.file("full")), quiet);
  EXPECT_EQ(full.steps, 3 * 3);  // 6 batches / accum 2 = 3 steps per epoch

  TrainOptions part = quiet;
  part.stop_after_epochs = 1;
  torch::manual_seed(999);
  auto first = run_training(tiny_config(dir.file("split")), part);
  EXPECT_EQ(first.steps, 3);
  TrainOptions resume = quiet;
  resume.resume = true;
  torch::manual_seed(4242);  // a resumed process starts with some other RNG state
  auto second = run_training(tiny_config(dir.file("split")), resume);
  EXPECT_EQ(second.steps, 9);

  auto a = io::read_safetensors(dir.file("full/last.safetensors"));
  auto b = io::read_safetensors(dir.file("split/last.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    EXPECT_TRUE(item.value().equal(b[item.key()])) << item.key();
  }
  EXPECT_DOUBLE_EQ(full.final_top1, second.final_top1);
  // Best-checkpoint tracking survives the resume: the same best top-1 (read back as a double,
  // not as the bits of an int64) and the same best.safetensors.
  EXPECT_GT(first.best_top1, 0.0);
  EXPECT_DOUBLE_EQ(full.best_top1, second.best_top1);
  auto best_a = io::read_safetensors(dir.file("full/best.safetensors"));
  auto best_b = io::read_safetensors(dir.file("split/best.safetensors"));
  for (const auto& item : best_a) {
    EXPECT_TRUE(item.value().equal(best_b[item.key()])) << "best: " << item.key();
  }
  for (auto f : {"best.safetensors", "last.state-9.pt", "metrics.jsonl", "config.json", "eval.json"}) {
    EXPECT_TRUE(file_exists(dir.file(std::string("full/") + f))) << f;
  }
  // The weights carry their config: a checkpoint alone rebuilds the model.
  io::Metadata meta;
  io::read_safetensors(dir.file("full/last.safetensors"), &meta);
  auto cfg = models::vit_config_from_json(models::model_config_from_metadata(meta));
  EXPECT_EQ(cfg.embed_dim, 16);
  EXPECT_EQ(meta.at("moejet.step"), "9");
  // When the last evaluation was the best, best.safetensors was written at that same step, and
  // last.safetensors is another name for it (no second write of the same bytes).
  io::Metadata best_meta;
  io::read_safetensors(dir.file("full/best.safetensors"), &best_meta);
  EXPECT_EQ(std::filesystem::equivalent(dir.file("full/last.safetensors"), dir.file("full/best.safetensors")),
            best_meta.at("moejet.step") == "9");
}

TEST(Trainer, Bf16TrainsAsWellAsFp32AndWritesFp32Checkpoints) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  moejet::testing::TempDir dir;
  TrainOptions quiet;
  auto fp32_cfg = tiny_config(dir.file("fp32"));
  auto bf16_cfg = tiny_config(dir.file("bf16"));
  bf16_cfg.train.precision = "bf16";
  for (auto* c : {&fp32_cfg, &bf16_cfg}) {  // enough to learn something in ~2 s (fp32: 25.5%)
    c->data.train_limit = 1024;
    c->data.eval_limit = 200;
    c->augment.mixup_alpha = 0;
    c->optim.lr = 5e-3;
    c->optim.warmup_epochs = 0.5;
    c->train.accum_steps = 1;
    c->model.as<models::VitConfig>().embed_dim = 32;
    c->model.as<models::VitConfig>().drop_path_rate = 0;
  }
  if (!kernels::bf16_native(torch::kCPU)) {
    EXPECT_TRUE(throws_error<ConfigError>([&] { run_training(bf16_cfg, quiet); }, {"no bf16 instructions"}));
    GTEST_SKIP() << "this CPU has no bf16 instructions";
  }
  const auto fp32 = run_training(fp32_cfg, quiet);
  const auto bf16 = run_training(bf16_cfg, quiet);
  // Same seeds and data: the runs differ only by the rounding of the products, so they differ,
  // but by no more than a few points of a 200-image evaluation.
  EXPECT_NE(read_file_bytes(dir.file("fp32/last.safetensors")), read_file_bytes(dir.file("bf16/last.safetensors")));
  EXPECT_NEAR(bf16.final_top1, fp32.final_top1, 5.0);
  EXPECT_GT(bf16.final_top1, 20.0) << "fp32: " << fp32.final_top1;  // chance is 10%; fp32 reached 25.5
  // Master weights, and so checkpoints, stay fp32.
  for (const auto& item : io::read_checkpoint(dir.file("bf16/last.safetensors"))) {
    EXPECT_EQ(item.value().scalar_type(), torch::kFloat) << item.key();
  }
  EXPECT_EQ(read_json_file(dir.file("bf16/config.json"))["train"]["precision"], "bf16");
}

TEST(Trainer, AnInitHeadForOtherClassesIsDroppedAndTheStartIsEvaluated) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  // Upstream on classes 0-4, downstream on 5-9: five classes each, but other ones. The head is
  // the new task's (freshly initialised), the rest of the model the checkpoint's, and the
  // evaluation before the first step is logged as epoch -1 at step 0.
  moejet::testing::TempDir dir;
  TrainOptions quiet;
  auto up = tiny_config(dir.file("up"));
  up.data.classes = {0, 1, 2, 3, 4};
  up.model.as<models::VitConfig>().num_classes = 5;
  up.train.epochs = 1;
  run_training(up, quiet);
  auto down = tiny_config(dir.file("down"));
  down.data.classes = {5, 6, 7, 8, 9};
  down.model.as<models::VitConfig>().num_classes = 5;
  down.train.epochs = 1;
  down.train.init = dir.file("up/last.safetensors");
  down.train.eval_at_start = true;
  down.train.max_steps = 1;
  down.optim.lr = 1e-12;  // one step that moves nothing: the weights are the init's
  run_training(down, quiet);
  const auto before = io::read_checkpoint(dir.file("up/last.safetensors"));
  const auto after = io::read_checkpoint(dir.file("down/last.safetensors"));
  EXPECT_TRUE(after["blocks.0.attn.qkv.weight"].allclose(before["blocks.0.attn.qkv.weight"], 1e-6, 1e-6));
  EXPECT_FALSE(after["head.weight"].allclose(before["head.weight"], 1e-3, 1e-3)) << "the old head was kept";
  bool start_eval = false;
  for (const auto& j : moejet::testing::read_jsonl(dir.file("down/metrics.jsonl"))) {
    if (j["event"] == "eval") {
      EXPECT_EQ(j["epoch"], -1) << j;
      EXPECT_EQ(j["step"], 0) << j;
      start_eval = true;
      break;
    }
    EXPECT_NE(j["event"], "train") << "trained before the start evaluation: " << j;
  }
  EXPECT_TRUE(start_eval);
  // With the same classes, the head is the checkpoint's.
  auto same = tiny_config(dir.file("same"));
  same.data.classes = {0, 1, 2, 3, 4};
  same.model.as<models::VitConfig>().num_classes = 5;
  same.train.epochs = 1;
  same.train.max_steps = 1;
  same.optim.lr = 1e-12;
  same.train.init = dir.file("up/last.safetensors");
  run_training(same, quiet);
  EXPECT_TRUE(io::read_checkpoint(dir.file("same/last.safetensors"))["head.weight"].allclose(before["head.weight"],
                                                                                             1e-6, 1e-6));
}

TEST(Trainer, NanLossStopsWithAClearErrorAndKeepsTheLastGoodCheckpoint) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  moejet::testing::TempDir dir;
  TrainOptions opts;
  opts.stop_after_epochs = 1;
  auto cfg = tiny_config(dir.file("run"));
  run_training(cfg, opts);
  auto before = read_file_bytes(dir.file("run/last.safetensors"));
  cfg.optim.lr = 1e38;
  cfg.optim.clip_grad = 0;
  cfg.optim.warmup_epochs = 0;
  opts.resume = true;
  opts.stop_after_epochs = 0;
  EXPECT_TRUE(throws_error<Error>([&] { run_training(cfg, opts); }, {"loss is", "last.safetensors"}))
      << "the NaN guard must stop training";
  EXPECT_EQ(read_file_bytes(dir.file("run/last.safetensors")), before);
}

TEST(Trainer, ClassCountMismatchIsAConfigError) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  moejet::testing::TempDir dir;
  auto cfg = tiny_config(dir.file("run"));
  cfg.model.as<models::VitConfig>().num_classes = 7;
  EXPECT_THROW(run_training(cfg, {}), ConfigError);
}

// The fused step writes the weights through their pointers, where ATen's in-place ops would bump
// the version counter: without its own bump a graph that saved a weight would not notice the change,
// and an evaluation after the step would multiply by the bf16 copy of the weights before it.
TEST(FusedAdamW, BumpsTheVersionSoThatTheBf16CopyOfAWeightIsMadeAgain) {
  torch::manual_seed(11);
  auto w = torch::randn({48, 32}).requires_grad_(true);
  FusedAdamW opt({w}, torch::optim::AdamWOptions(0.1));
  const auto before = moejet::kernels::bf16_weight(w).clone();
  const auto version = w._version();
  w.mutable_grad() = torch::randn({48, 32});
  opt.step();
  EXPECT_GT(w._version(), version);
  const auto after = moejet::kernels::bf16_weight(w);
  EXPECT_TRUE(torch::equal(after.view(torch::kShort), moejet::kernels::to_bf16(w.detach()).view(torch::kShort)));
  EXPECT_FALSE(torch::equal(after.view(torch::kShort), before.view(torch::kShort)));
}

// With a bf16 copy kept and nobody holding it, the step writes it: the next forward converts
// nothing, and multiplies by exactly what a conversion would give.
TEST(FusedAdamW, WritesTheBf16CopyOfAWeightAsItUpdatesIt) {
  torch::manual_seed(12);
  auto w = torch::randn({300, 70}).requires_grad_(true);
  FusedAdamW opt({w}, torch::optim::AdamWOptions(0.05));
  moejet::kernels::bf16_weight(w);  // a copy, held by nobody
  for (int step = 0; step < 3; ++step) {
    w.mutable_grad() = torch::randn({300, 70});
    opt.step();
    const auto conversions = moejet::kernels::bf16_weight_cache_stats().conversions;
    const auto copy = moejet::kernels::bf16_weight(w);
    EXPECT_EQ(moejet::kernels::bf16_weight_cache_stats().conversions, conversions) << "step " << step;
    EXPECT_TRUE(torch::equal(copy.view(torch::kShort), moejet::kernels::to_bf16(w.detach()).view(torch::kShort)));
  }
  // A copy still held (a graph saved it) is not written: the next forward converts again.
  auto held = moejet::kernels::bf16_weight(w);
  const auto held_bits = held.clone();
  w.mutable_grad() = torch::randn({300, 70});
  opt.step();
  EXPECT_TRUE(torch::equal(held.view(torch::kShort), held_bits.view(torch::kShort)));
  const auto conversions = moejet::kernels::bf16_weight_cache_stats().conversions;
  const auto copy = moejet::kernels::bf16_weight(w);
  EXPECT_EQ(moejet::kernels::bf16_weight_cache_stats().conversions, conversions + 1);
  EXPECT_TRUE(torch::equal(copy.view(torch::kShort), moejet::kernels::to_bf16(w.detach()).view(torch::kShort)));
}

TEST(FusedAdamW, MatchesTorchAdamWAndSharesItsStateFormat) {
  torch::manual_seed(0);
  auto make = [] {
    // The first is large enough to be split across threads.
    return std::vector<torch::Tensor>{torch::randn({1100, 1000}).requires_grad_(), torch::randn({5}).requires_grad_(),
                                      torch::randn({4, 6}).t().requires_grad_()};  // non-contiguous
  };
  auto a = make();
  std::vector<torch::Tensor> b;
  for (auto& t : a) {
    b.push_back(t.detach().clone().requires_grad_());
  }
  auto opts = torch::optim::AdamWOptions(3e-3).weight_decay(0.05).betas({0.9, 0.99});
  FusedAdamW fused(a, opts);
  torch::optim::AdamW ref(b, opts);
  for (int s = 0; s < 6; ++s) {
    auto grads = std::vector<torch::Tensor>{torch::randn({1100, 1000}), torch::randn({5}), torch::randn({6, 4})};
    for (size_t i = 0; i < a.size(); ++i) {
      a[i].mutable_grad() = grads[i].clone();
      b[i].mutable_grad() = grads[i].clone();
    }
    fused.step();
    ref.step();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(moejet::testing::all_close(a[i].detach(), b[i].detach(), 1e-5, 1e-6)) << i;
  }
  // A state saved by the fused optimizer loads into torch's AdamW and continues identically.
  moejet::testing::TempDir dir;
  torch::save(fused, dir.file("opt.pt"));
  torch::optim::AdamW reloaded(a, opts);
  torch::load(reloaded, dir.file("opt.pt"));
  auto& st = static_cast<torch::optim::AdamWParamState&>(
      *reloaded.state().at(c10::guts::to_string(a[0].unsafeGetTensorImpl())));
  EXPECT_EQ(st.step(), 6);
}

TEST(Configs, EveryShippedConfigParsesAndValidates) {
  int checked = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(std::string(MOEJET_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".json")
      continue;
    const std::string path = entry.path().string();
    auto j = read_json_file(path);
    if (path.find("/superclasses/") != std::string::npos) {
      data::superclasses_from_json(j, path).validate(path);
    } else if (j.contains("model")) {
      EXPECT_NO_THROW(train::train_config_from_json(j).validate()) << path;
    } else {
      EXPECT_NO_THROW(models::vit_config_from_json(j).validate()) << path;
    }
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(RunDir, AFolderWithARunIsReusedOnlyOnPurposeAndOneTrainingOwnsIt) {
  moejet::testing::TempDir tmp;
  const std::string d = tmp.file("run");
  {
    RunDir run(d, RunDirMode::New);  // a new folder
    write_json_file(run.file("config.json"), json::object());
    { std::ofstream(run.last()) << "weights"; }
    // A second training on the same folder stops, naming this process.
    EXPECT_TRUE(
        throws_error<Error>([&] { RunDir again(d, RunDirMode::Resume); }, {"pid " + std::to_string(::getpid())}))
        << "a second RunDir must not take the lock";
  }
  // Released with its owner. A run is there now: a new training is refused ...
  EXPECT_TRUE(RunDir::holds_run(d));
  EXPECT_TRUE(throws_error<ConfigError>([&] { RunDir fresh(d, RunDirMode::New); }, {"--resume", "--overwrite"}))
      << "a new run must not start over an existing one";
  EXPECT_TRUE(file_exists(d + "/last.safetensors")) << "a refused start must not touch the run";
  // ... resuming keeps it, and a killed writer's temp file is cleared.
  { std::ofstream(d + "/last.safetensors.tmp.12345") << "half"; }
  { std::ofstream(d + "/last.state-7.pt") << "s7"; }
  { std::ofstream(d + "/last.state-9.pt") << "s9"; }
  {
    RunDir resumed(d, RunDirMode::Resume);
    EXPECT_FALSE(file_exists(d + "/last.safetensors.tmp.12345"));
    EXPECT_EQ(resumed.resumable_state(9), d + "/last.state-9.pt");
    resumed.prune_states(9);
    EXPECT_FALSE(file_exists(d + "/last.state-7.pt"));
    EXPECT_TRUE(file_exists(d + "/last.state-9.pt"));
  }
  // Overwrite removes the earlier run's files first.
  {
    RunDir replaced(d, RunDirMode::Overwrite);
    EXPECT_FALSE(RunDir::holds_run(d));
    EXPECT_FALSE(replaced.resumable_state(9).has_value());
  }
  EXPECT_NE(default_run_dir("vit_fmnist").find("runs/vit_fmnist-"), std::string::npos);
}

TEST(Checkpoint, AFullDiskIsAClearErrorAndLeavesThePreviousFilesIntact) {
  if (!file_exists("/dev/full")) {
    GTEST_SKIP() << "no /dev/full";
  }
  moejet::testing::TempDir tmp;
  torch::nn::Linear lin(4, 3);
  torch::optim::AdamW opt(lin->parameters());
  TrainState s1;
  s1.step = 5;
  const std::string state = tmp.file("last.state-5.pt"), weights = tmp.file("last.safetensors");
  save_train_state(state, opt, s1);
  save_model_checkpoint(weights, *lin, json::object(), s1);
  const auto before = io::read_safetensors(weights);
  // The temp file both writers open is made a link to /dev/full: every write fails with ENOSPC.
  const std::string pid = std::to_string(::getpid());
  TrainState s2;
  s2.step = 6;
  for (const auto& target : {state, weights}) {
    std::filesystem::create_symlink("/dev/full", target + ".tmp." + pid);
    EXPECT_TRUE(throws_error<Error>(
        [&] {
          if (target == state) {
            save_train_state(state, opt, s2);
          } else {
            save_model_checkpoint(weights, *lin, json::object(), s2);
          }
        },
        {"disk full"}))
        << target << ": a write to a full disk";
    EXPECT_FALSE(std::filesystem::is_symlink(target + ".tmp." + pid)) << "temp file left behind";
  }
  EXPECT_EQ(load_train_state(state, opt).step, 5);
  auto after = io::read_safetensors(weights);
  for (const auto& item : before)
    EXPECT_TRUE(item.value().equal(after[item.key()])) << item.key();
}

TEST(DataSplits, ValSplitHoldsOutTheSameStratifiedImagesAndClassesMustMatch) {
  namespace fs = std::filesystem;
  const std::string src = moejet::testing::test_data_dir() + "/cifar10_jpg/test";
  moejet::testing::TempDir tmp;
  fs::create_directories(tmp.file("flat"));
  fs::copy(src, tmp.file("flat"), fs::copy_options::recursive);  // airplane 3, cat 10, dog 10
  data::DataConfig dc;
  dc.dataset = "folder:" + tmp.file("flat");
  dc.val_split = 0.3;
  auto train = data::open_split(dc, dc.train_split, 0, 0);
  auto held = data::open_split(dc, dc.eval_split, 0, 0);
  ASSERT_EQ(held->size(), 1u + 3u + 3u);  // round(0.3 n) per class, at least one
  ASSERT_EQ(train->size(), 23u - held->size());
  auto bytes = [](const data::DatasetPtr& ds) {
    std::set<std::string> out;
    for (size_t i = 0; i < ds->size(); ++i) {
      auto t = ds->get(i).image.contiguous();
      out.insert(std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel())));
    }
    return out;
  };
  auto a = bytes(train), b = bytes(held);
  for (const auto& x : b)
    EXPECT_EQ(a.count(x), 0u) << "a held-out image is also a training image";
  EXPECT_EQ(bytes(data::open_split(dc, dc.eval_split, 0, 7)), b) << "the held-out images depend on the seed";
  EXPECT_EQ(held->class_names(), train->class_names());

  // Train and test folders with different classes: training refuses to start.
  for (const auto& [split, classes] : {std::pair{"train", std::vector<std::string>{"cat", "dog"}},
                                       std::pair{"test", std::vector<std::string>{"airplane", "dog"}}}) {
    for (const auto& c : classes) {
      fs::create_directories(tmp.file(std::string("mm/") + split + "/" + c));
      fs::copy(src + "/" + c, tmp.file(std::string("mm/") + split + "/" + c), fs::copy_options::recursive);
    }
  }
  auto c = tiny_config(tmp.file("run"));
  c.data.dataset = "folder:" + tmp.file("mm");
  c.data.train_limit = c.data.eval_limit = 0;
  c.model.as<models::VitConfig>().in_chans = 3;
  c.model.as<models::VitConfig>().img_size = 32;
  c.model.as<models::VitConfig>().patch_size = 8;
  c.model.as<models::VitConfig>().num_classes = 2;
  TrainOptions quiet;
  EXPECT_TRUE(throws_error<ConfigError>([&] { run_training(c, quiet); }, {"airplane, dog"}))
      << "training against a test split with other classes";
}

namespace {

// Records each task a library call reports when the call ends it: label, total, units done, finished.
struct RecordingProgress : ProgressReporter {
  struct Task : ProgressTask {
    std::string label;
    int64_t total = 0, done = 0;
    bool finished = false;
    void advance(int64_t n, const std::string&) override {
      done += n;
    }
    void finish(const std::string&) override {
      finished = true;
    }
  };
  std::vector<std::tuple<std::string, int64_t, int64_t, bool>> ended;
  struct Recorded : Task {
    RecordingProgress* owner = nullptr;
    ~Recorded() override {
      owner->ended.emplace_back(label, total, done, finished);
    }
  };
  std::unique_ptr<ProgressTask> start(const std::string& label, int64_t total, const std::string&) override {
    auto t = std::make_unique<Recorded>();
    t->label = label;
    t->total = total;
    t->owner = this;
    return t;
  }
};

}  // namespace

TEST(Trainer, ReportsEachEpochAndEvaluationToTheCallersProgressReporter) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  moejet::testing::TempDir dir;
  RecordingProgress recorder;
  TrainOptions options;
  options.progress = &recorder;
  auto cfg = tiny_config(dir.file("run"));
  cfg.train.epochs = 2;
  run_training(cfg, options);
  // 192 images in batches of 32: 6 batches an epoch; 100 eval images in batches of 32 too (the
  // training batch, as timm evaluates by default), the last one short.
  using Ended = std::tuple<std::string, int64_t, int64_t, bool>;
  EXPECT_EQ(recorder.ended,
            (std::vector<Ended>{
                {"epoch 1/2", 6, 6, true}, {"eval", 4, 4, true}, {"epoch 2/2", 6, 6, true}, {"eval", 4, 4, true}}));
  // train.eval_batch_size sets the evaluation's own batch, and the score does not depend on it.
  RecordingProgress by50;
  options.progress = &by50;
  auto cfg50 = tiny_config(dir.file("run50"));
  cfg50.train.epochs = 1;
  cfg50.train.eval_batch_size = 50;
  const auto r50 = run_training(cfg50, options);
  EXPECT_EQ(by50.ended, (std::vector<Ended>{{"epoch 1/1", 6, 6, true}, {"eval", 2, 2, true}}));
  RecordingProgress by32;
  options.progress = &by32;
  auto cfg32 = tiny_config(dir.file("run32"));
  cfg32.train.epochs = 1;
  const auto r32 = run_training(cfg32, options);
  EXPECT_DOUBLE_EQ(r50.final_top1, r32.final_top1);
}

TEST(Trainer, TheDoneRecordSaysWhereTheWallTimeWent) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  moejet::testing::TempDir dir;
  auto cfg = tiny_config(dir.file("run"));
  cfg.train.epochs = 2;
  cfg.train.eval_at_start = true;
  run_training(cfg, TrainOptions{});
  const auto records = moejet::testing::read_jsonl(dir.file("run/metrics.jsonl"));
  ASSERT_FALSE(records.empty());
  const auto& done = records.back();
  const auto last = done.dump();
  ASSERT_EQ(done["event"], "done") << last;
  ASSERT_TRUE(done.contains("seconds")) << last;
  const auto& s = done["seconds"];
  double parts = 0;
  for (const char* key : {"setup", "train", "eval", "checkpoint"}) {
    ASSERT_TRUE(s.contains(key)) << key << ": " << last;
    // Every phase ran here (three evaluations, two epochs' checkpoints), so none can be zero.
    EXPECT_GT(s[key].get<double>(), 0.0) << key << ": " << last;
    parts += s[key].get<double>();
  }
  const double total = s["total"].get<double>();
  EXPECT_LE(parts, total * 1.001 + 1e-3) << "the phases overlap or are counted twice: " << last;
  // What is not in a phase (logging, the loop) is small beside them.
  EXPECT_GE(parts, 0.5 * total) << last;
}

TEST(StepTiming, PhasesAddUpAndMediansAreTakenPerPhase) {
  torch::manual_seed(0);
  train::TimedTrainStep step("tiny", models::make_model(moejet::testing::tiny_vit()), torch::kCPU);
  step.set_batch(4);
  EXPECT_EQ(step.batch(), 4);
  auto before = step.model().parameters()[0].clone();
  const auto t = step.step();
  EXPECT_GT(t.forward, 0);
  EXPECT_GT(t.backward, 0);
  EXPECT_GT(t.optimizer, 0);
  EXPECT_NEAR(t.total, t.forward + t.backward + t.optimizer, 1e-6);
  EXPECT_FALSE(torch::equal(before, step.model().parameters()[0]));  // a real step: the weights moved

  train::StepSamples samples;
  samples.steps = {{1, 30, 5, 36}, {3, 10, 6, 19}, {2, 20, 4, 26}};
  const auto m = samples.median();
  EXPECT_EQ(m.forward, 2);
  EXPECT_EQ(m.backward, 20);
  EXPECT_EQ(m.optimizer, 5);
  EXPECT_EQ(m.total, 26);
  EXPECT_EQ(samples.totals(), (std::vector<double>{36, 19, 26}));

  // The report reads the achieved rate against the GEMM peak: 6 x forward MACs per image.
  const auto r = train::report_step(step, samples, 13.0, 100.0);
  double macs = 0;
  for (const auto& layer : step.model().macs_by_layer()) {
    macs += layer.second;
  }
  EXPECT_DOUBLE_EQ(r.macs_per_image, macs);
  EXPECT_DOUBLE_EQ(r.ratio_to_first, 2.0);
  EXPECT_DOUBLE_EQ(r.gflops_per_second(), 6 * macs * 4 / 26 / 1e9);
  EXPECT_DOUBLE_EQ(r.to_json()["fraction_of_gemm_peak"].get<double>(), r.gflops_per_second() / 100.0);
  EXPECT_GT(train::gemm_gflops(torch::kCPU, kernels::Precision::fp32, 64, 2), 0.0);
  // Without a memory rate the report has no optimizer floor; with one, the floor is the
  // optimizer's bytes at that rate, read against the optimizer's median.
  EXPECT_EQ(r.optimizer_floor_seconds(), 0.0);
  EXPECT_FALSE(r.to_json().contains("optimizer_floor_seconds"));
  const auto with_memory = train::report_step(step, samples, 13.0, 100.0, 20.0);
  EXPECT_EQ(with_memory.optimizer_bytes, step.optimizer_bytes());
  EXPECT_DOUBLE_EQ(with_memory.optimizer_floor_seconds(), static_cast<double>(step.optimizer_bytes()) / 20e9);
  const auto j = with_memory.to_json();
  EXPECT_DOUBLE_EQ(j["optimizer_floor_seconds"].get<double>(), with_memory.optimizer_floor_seconds());
  EXPECT_DOUBLE_EQ(j["optimizer_fraction_of_memory_rate"].get<double>(), with_memory.optimizer_floor_seconds() / 5);
  EXPECT_GT(train::memory_gbps(torch::kCPU, 1 << 16, 2), 0.0);
}

TEST(StepTiming, OptimizerBytesCountWhatAdamwStreamsForTheParametersItTrains) {
  torch::manual_seed(0);
  auto model = models::make_model(moejet::testing::tiny_vit());
  int64_t all = 0, frozen = 0;
  for (const auto& np : model->named_parameters()) {
    all += np.value().numel();
    if (np.key().rfind("patch_embed.", 0) == 0) {
      np.value().set_requires_grad(false);
      frozen += np.value().numel();
    }
  }
  ASSERT_GT(frozen, 0);
  train::TimedTrainStep step("tiny", model, torch::kCPU);
  // Value, gradient and both moments read, value and moments written, 4 bytes each; a frozen
  // parameter is not the optimizer's and costs it nothing.
  EXPECT_EQ(step.optimizer_bytes(), 28 * (all - frozen));
}
