#include "moejet/recycle/recycle_job.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <numeric>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/data/augment.h"
#include "moejet/models/model_file.h"

namespace moejet::recycle {

namespace {

// The report sits beside the weights: runs/x/init.safetensors -> runs/x/init.recycle.json.
std::string default_report_path(const std::string& out) {
  auto p = std::filesystem::path(out);
  return (p.parent_path() / (p.stem().string() + ".recycle.json")).string();
}

// The fine-tuning images themselves (range and limit of the training config apply), at most
// `images` of them in a class-stratified sample so that every class is seen (or the first ones).
data::DatasetPtr open_stats_data(const StatsData& s, uint64_t seed) {
  check<ConfigError>(s.images > 0, "recycle --images: must be > 0, got {}", s.images);
  auto ds = data::open_split(s.data, s.split, s.split == s.data.train_split ? s.data.train_limit : 0, s.data_seed);
  if (s.sample == "first") {
    const auto n = std::min<size_t>(static_cast<size_t>(s.images), ds->size());
    std::vector<size_t> idx(n);
    std::iota(idx.begin(), idx.end(), size_t{0});
    return data::subset(ds, std::move(idx), fmt::format("{} (its first {} images)", ds->describe(), n));
  }
  check<ConfigError>(s.sample == "stratified", "recycle --stats-sample: expected stratified or first, got \"{}\"",
                     s.sample);
  return data::stratified_subset(ds, s.images, seed);
}

// One source loaded into its model, with the statistics the method needs. ViT sources run at the
// target's input size, their position embedding resampled as for fine-tuning.
class SourceLoader {
 public:
  SourceLoader(const RecycleJob& job, const models::ModelConfig& target_cfg, models::ImageClassifierImpl& target)
      : job_(job), target_cfg_(target_cfg), target_(target) {
    if (needs_stats(job.options.method)) {
      stats_data_ = open_stats_data(job.stats, job.options.seed);
      spdlog::info("statistics: {} images of {}", stats_data_->size(), stats_data_->describe());
    }
  }

  RecycleSource load(const std::string& role, const SourceSpec& spec, io::Metadata* metadata_out = nullptr) {
    io::Metadata meta;
    auto state = io::read_checkpoint(spec.path, &meta);
    json mj = spec.model.is_null() ? models::model_config_from_metadata(meta, spec.path) : spec.model;
    if (mj.is_null()) {
      check<ConfigError>(role == "dense",
                         "{}: no moejet model config in this checkpoint; name its architecture with "
                         "--source-model {}=PRESET_OR_JSON",
                         spec.path, role);
      mj = job_.model;
      mj.erase("moe");
    }
    auto cfg = models::model_config_from_json(mj, role + " source model");
    check<ConfigError>(!cfg.moe().enabled(), "{}: the {} source is already an MoE model", spec.path, role);
    auto* vit = cfg.get_if<models::VitConfig>();
    if (const auto* target = target_cfg_.get_if<models::VitConfig>(); vit != nullptr && target != nullptr) {
      vit->img_size = target->img_size;
    }
    auto model = models::make_model(cfg);
    spdlog::info("{} source {}: {}", role, spec.path,
                 models::load_model_weights(*model, std::move(state), spec.path, false));
    RecycleSource src;
    src.name = spec.path;
    src.model = model.get();
    if (stats_data_) {
      src.stats = collect_stats(role, *model);
    }
    held_.push_back(model);
    if (metadata_out)
      *metadata_out = std::move(meta);
    return src;
  }

  size_t stats_images() const {
    return stats_data_ ? stats_data_->size() : 0;
  }

 private:
  ModelStats collect_stats(const std::string& role, models::ImageClassifierImpl& model) {
    const bool wider = is_wider(model, target_);
    // A wider dense source also narrows the dense MLPs of every block, so all need statistics.
    std::vector<int64_t> blocks = target_cfg_.moe().block_indices(target_.num_blocks());
    if (wider && role == "dense") {
      blocks.resize(static_cast<size_t>(model.num_blocks()));
      std::iota(blocks.begin(), blocks.end(), int64_t{0});
    }
    const auto& s = job_.stats;
    StatsOptions so;
    so.images = static_cast<int64_t>(stats_data_->size());
    so.batch_size = s.batch_size;
    so.coactivation = job_.options.method == Method::Graph;
    so.quantile = s.firing_quantile;
    so.num_workers = s.workers;
    so.seed = job_.options.seed;
    so.progress = job_.progress;
    model.to(job_.device);
    auto stats =
        collect_model_stats(model, blocks, stats_data_, data::make_eval_transform(s.transform, stats_data_->channels()),
                            so, job_.device, wider);
    model.to(torch::kCPU);
    return stats;
  }

  const RecycleJob& job_;
  const models::ModelConfig& target_cfg_;
  models::ImageClassifierImpl& target_;
  data::DatasetPtr stats_data_;
  std::vector<models::ModelPtr> held_;
};

// The dense model's preprocessing and data travel on, so that `moejet eval` of the recycled init
// (the step-0 point) needs no flags: at the MoE's input size, and with the class names only when
// the head still has those classes.
io::Metadata carried_metadata(const io::Metadata& dense_meta, const std::string& dense_path,
                              const models::ModelConfig& target) {
  io::Metadata extra;
  if (auto it = dense_meta.find(models::kPretrainedCfgKey); it != dense_meta.end()) {
    json pre = parse_json(it->second, dense_path + " (" + models::kPretrainedCfgKey + ")");
    pre["input_size"] = {target.in_chans(), target.img_size(), target.img_size()};
    if (pre.contains("label_names") && pre["label_names"].size() != static_cast<size_t>(target.num_classes())) {
      pre.erase("label_names");
      pre.erase("num_classes");
    }
    extra[models::kPretrainedCfgKey] = pre.dump();
  }
  if (auto it = dense_meta.find(models::kDataKey); it != dense_meta.end()) {
    extra[models::kDataKey] = it->second;
  }
  return extra;
}

}  // namespace

json run_recycle_job(const RecycleJob& job) {
  const auto cfg = models::model_config_from_json(job.model);
  torch::manual_seed(static_cast<int64_t>(job.options.seed));
  auto moe = models::make_model(cfg);

  SourceLoader loader(job, cfg, *moe);
  RecycleSources sources;
  io::Metadata dense_meta;
  sources.dense = loader.load("dense", job.dense, &dense_meta);
  for (const auto& [group, spec] : job.groups) {
    check<ConfigError>(file_exists(spec.path), "--source {}: no such file '{}'", group, spec.path);
    sources.groups[group] = loader.load(group, spec);
  }

  auto report = recycle_model(sources, *moe, job.options);
  report["dense"] = job.dense.path;
  report["model"] = cfg;
  report["statistics"] = {{"data", job.stats.data.dataset},
                          {"split", job.stats.split},
                          {"images", static_cast<int64_t>(loader.stats_images())},
                          {"sample", job.stats.sample},
                          {"firing_quantile", job.stats.firing_quantile},
                          {"transform", config_to_json(job.stats.transform)},
                          {"score", job.options.score},
                          {"fc2_scale", job.options.rescale ? "hidden" : "none"}};
  if (auto dir = std::filesystem::path(job.out).parent_path(); !dir.empty()) {
    std::filesystem::create_directories(dir);
  }
  models::save_model(job.out, *moe, json(cfg), carried_metadata(dense_meta, job.dense.path, cfg));
  const std::string report_path = job.report.empty() ? default_report_path(job.out) : job.report;
  write_json_file(report_path, report);
  spdlog::info("recycled ({}) {:.2f} M-parameter MoE -> {} (report {})", method_name(job.options.method),
               models::count_parameters(*moe) / 1e6, job.out, report_path);
  return report;
}

}  // namespace moejet::recycle
