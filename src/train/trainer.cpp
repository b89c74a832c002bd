#include "moejet/train/trainer.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/core/interrupt.h"
#include "moejet/core/progress.h"
#include "moejet/core/system.h"
#include "moejet/data/loader.h"
#include "moejet/data/preprocess.h"
#include "moejet/data/superclasses.h"
#include "moejet/eval/evaluate.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/kernels/matmul.h"
#include "moejet/models/checkpoint_layout.h"
#include "moejet/models/model_file.h"
#include "moejet/train/checkpoint.h"
#include "moejet/train/metrics_log.h"
#include "moejet/train/optimizer.h"
#include "moejet/train/run_dir.h"

namespace moejet::train {

namespace fs = std::filesystem;

torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets) {
  return -(targets * torch::log_softmax(logits, -1)).sum(-1).mean();
}

namespace {

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Fault injection for the kill tests: MOEJET_FAULT=<point>:<step> ends the process with SIGKILL at
// that point of that optimizer step, as a power cut or the OOM killer would ("step": right after
// the update, inside an epoch; "state-written"/"weights-written": inside the checkpoint write).
// "interrupt" sends the process a SIGINT there instead, as Ctrl-C would.
void fault_point(const char* point, int64_t step) {
  static const char* spec = std::getenv("MOEJET_FAULT");
  if (spec != nullptr && std::string(spec) == fmt::format("{}:{}", point, step)) {
    std::raise(std::string(point) == "interrupt" ? SIGINT : SIGKILL);
  }
}

// How evenly `load` spreads over its experts: max/mean and min/mean (1 and 1 when even) and the
// coefficient of variation (0 when even).
void add_balance(json& j, const torch::Tensor& load) {
  const double mean = load.mean().item<double>();
  const double safe = mean > 0 ? mean : 1.0;
  j["load_max_over_mean"] = load.max().item<double>() / safe;
  j["load_min_over_mean"] = load.min().item<double>() / safe;
  j["load_cv"] = load.numel() > 1 ? load.std().item<double>() / safe : 0.0;
}

json moe_stats_json(const std::vector<std::pair<int64_t, std::shared_ptr<moe::MoeLayer>>>& layers) {
  json out = json::array();
  for (const auto& [block, layer] : layers) {
    const auto& st = layer->last_stats;
    json j = {{"block", block}, {"kind", layer->kind()}, {"dispatch_entropy", st.dispatch_entropy}};
    if (st.expert_load.defined() && st.expert_load.numel() > 0) {
      auto load = st.expert_load.to(torch::kDouble);
      add_balance(j, load);
      // The share of each expert, for utilisation plots (4 decimals keep the lines short).
      auto rounded = (load * 1e4).round().div(1e4).contiguous();
      j["load"] = std::vector<double>(rounded.data_ptr<double>(), rounded.data_ptr<double>() + rounded.numel());
      // Per group of the layer's experts (SpheroMoE: core, then universal; one group "experts"
      // elsewhere), in the order the loads list them: the group's share of the mass and its
      // balance among experts of one size and role.
      j["groups"] = json::array();
      int64_t first = 0;
      for (const auto& [name, experts] : layer->expert_groups()) {
        const int64_t count = experts->num_experts;
        TORCH_CHECK(count > 0 && first + count <= load.numel(), "moe stats: group ", name, " (", count,
                    " experts from ", first, ") lies outside the ", load.numel(), " loads");
        auto part = load.narrow(0, first, count);
        json g = {{"name", name}, {"first", first}, {"experts", count}, {"share", part.sum().item<double>()}};
        add_balance(g, part);
        j["groups"].push_back(g);
        first += count;
      }
    }
    if (layer->kind() == "topk") {
      j["dropped_fraction"] = st.dropped_fraction;
    }
    out.push_back(j);
  }
  return out;
}

// One training run in three parts: the constructor sets up what the whole run uses (data, model,
// optimizer, run folder, resumed state), run_epoch() is one epoch of optimizer steps, and
// end_epoch() the evaluation and checkpoints after it. The set-up keeps one fixed order, because
// the seeded draws (data subsets, model init, rank seeds) must repeat exactly in a resumed or
// repeated run.
class Trainer {
 public:
  Trainer(const TrainConfig& config, const TrainOptions& options)
      : cfg_(config), tc_(cfg_.train), options_(options), created_(std::chrono::steady_clock::now()) {
    cfg_.validate();
    if (tc_.threads > 0) {
      set_compute_threads(tc_.threads);
    }
    device_ = parse_device(tc_.device);
    precision_ = kernels::resolve_precision(tc_.precision, device_, "config 'train.precision'");
    kernels::require_precision(precision_, device_);
    spdlog::info("matrix products: {}", kernels::gemm_kernel(device_, precision_));
    torch::manual_seed(tc_.seed);
    if (options_.dist.enabled()) {
      dist_ = std::make_unique<Distributed>(options_.dist, device_);
      spdlog::info("distributed: rank {} of {} (c10d, {} per rank of the global batch {})", dist_->rank(),
                   dist_->world_size(), tc_.batch_size / dist_->world_size(), tc_.batch_size);
    }
    main_rank_ = !dist_ || dist_->is_main();
    progress_ = main_rank_ ? options_.progress : nullptr;
    set_up_data();
    set_up_superclasses();
    set_up_model();
    set_up_run();
  }

  TrainResult run() {
    // Ctrl-C or SIGTERM: finish the step, write a resumable checkpoint, return. Every rank must
    // stop at the same step, so under data parallelism they agree by all-reduce.
    InterruptGuard interrupt_guard;
    kernels::PrecisionScope precision(precision_);  // training and the evaluations between epochs
    stop_ = state_.step >= total_steps_;
    const auto started = std::chrono::steady_clock::now();
    if (tc_.eval_at_start && state_.step == 0 && main_rank_ && !stop_) {
      evaluate(-1);  // a resumed run has logged it already
    }
    model_->train();
    for (int64_t epoch = state_.epoch; epoch < tc_.epochs && !stop_; ++epoch) {
      run_epoch(epoch);
      if (!end_epoch(epoch)) {
        break;
      }
    }
    result_.best_top1 = state_.best_top1;
    result_.steps = state_.step;
    // Every rank loads its share of each global batch: the job's rate is world_size times ours.
    const double world = dist_ ? static_cast<double>(dist_->world_size()) : 1.0;
    result_.train_images_per_second = train_seconds_ > 0 ? world * images_seen_ / train_seconds_ : 0.0;
    if (!result_.interrupted_by) {
      log({{"event", "done"},
           {"step", state_.step},
           {"best_top1", state_.best_top1},
           {"final_top1", result_.final_top1},
           {"train_img_per_s", result_.train_images_per_second},
           // Where the run's wall time went, so a slow run says whether it was the steps.
           {"seconds",
            {{"setup", seconds_between(created_, started)},
             {"train", train_seconds_},
             {"eval", eval_seconds_},
             {"checkpoint", checkpoint_seconds_},
             {"total", seconds_between(created_, std::chrono::steady_clock::now())}}}});
    }
    return result_;
  }

 private:
  void set_up_data() {
    train_ds_ = data::open_split(cfg_.data, cfg_.data.train_split, cfg_.data.train_limit, tc_.seed);
    eval_ds_ = data::open_split(cfg_.data, cfg_.data.eval_split, cfg_.data.eval_limit, data::kEvalSubsetSeed);
    spdlog::info("train data: {}", train_ds_->describe());
    spdlog::info("eval data: {}", eval_ds_->describe());
    {
      // Scores against another split's labelling would be silently wrong.
      const auto tn = train_ds_->class_names(), en = eval_ds_->class_names();
      check<ConfigError>(tn.empty() || en.empty() || tn == en,
                         "the eval split's classes ({}) are not the training split's ({}); both splits need the same "
                         "class folders",
                         fmt::join(en, ", "), fmt::join(tn, ", "));
    }
    check<ConfigError>(cfg_.model.num_classes() == train_ds_->num_classes(),
                       "config 'model.num_classes' is {} but the training data has {} classes",
                       cfg_.model.num_classes(), train_ds_->num_classes());
    check<ConfigError>(cfg_.model.in_chans() == train_ds_->channels(),
                       "config 'model.in_chans' is {} but the training images have {} channels", cfg_.model.in_chans(),
                       train_ds_->channels());
    if (cfg_.augment.image_size == 0) {
      cfg_.augment.image_size = cfg_.model.img_size();
    }
    check<ConfigError>(cfg_.augment.image_size == cfg_.model.img_size(),
                       "config 'augment.image_size' ({}) differs from 'model.img_size' ({})", cfg_.augment.image_size,
                       cfg_.model.img_size());
    num_classes_ = cfg_.model.num_classes();

    data::LoaderOptions lo;
    lo.batch_size = tc_.batch_size;
    lo.shuffle = true;
    lo.drop_last = true;
    lo.num_workers = cfg_.data.num_workers;
    lo.seed = tc_.seed;
    if (dist_) {
      check<ConfigError>(tc_.batch_size % dist_->world_size() == 0,
                         "config 'train.batch_size' ({}) is the global batch: it must split evenly over {} processes",
                         tc_.batch_size, dist_->world_size());
      lo.shard = dist_->rank();
      lo.shards = dist_->world_size();
    }
    train_loader_ =
        std::make_unique<data::Loader>(train_ds_, data::make_train_transform(cfg_.augment, train_ds_->channels()), lo);
    data::LoaderOptions elo = lo;
    elo.shard = 0;  // rank 0 evaluates the whole eval set
    elo.shards = 1;
    elo.batch_size = tc_.eval_batch_size > 0 ? tc_.eval_batch_size : tc_.batch_size;
    elo.shuffle = false;
    elo.drop_last = false;
    eval_loader_ =
        std::make_unique<data::Loader>(eval_ds_, data::make_eval_transform(cfg_.augment, eval_ds_->channels()), elo);
    batches_ = train_loader_->batches_per_epoch();
    check<ConfigError>(batches_ > 0, "training set has {} images, fewer than one batch of {}", train_ds_->size(),
                       tc_.batch_size);
  }

  // Mobile V-MoE router supervision, and what a checkpoint stores besides the weights.
  void set_up_superclasses() {
    // How the model sees an image and what its outputs mean, and where its data came from: eval
    // and later commands read these instead of guessing.
    checkpoint_extra_[models::kPretrainedCfgKey] =
        data::to_pretrained_cfg(
            data::preprocess_of(cfg_.augment, train_ds_->channels(), cfg_.model.img_size(), train_ds_->class_names()))
            .dump();
    checkpoint_extra_[models::kDataKey] = to_json(cfg_)["data"].dump();
    if (tc_.superclasses.empty()) {
      return;
    }
    const int64_t experts = cfg_.model.moe().get<moe::PerImageMoeOptions>().num_experts;
    if (tc_.superclasses == "random") {
      superclasses_ = data::random_superclasses(num_classes_, experts, tc_.seed);
    } else {
      superclasses_ = data::read_superclasses(tc_.superclasses, num_classes_);
    }
    superclasses_->class_names = train_ds_->class_names();
    check<ConfigError>(superclasses_->num_superclasses == experts,
                       "{}: {} super-classes for a router over {} experts (model.moe.num_experts)", tc_.superclasses,
                       superclasses_->num_superclasses, experts);
    checkpoint_extra_[models::kSuperclassesKey] = superclasses_->to_json().dump();
    spdlog::info("router supervised by super-classes ({}), weight {}: {}", tc_.superclasses, tc_.router_loss_weight,
                 superclasses_->to_json()["groups"].dump());
    superclass_matrix_ = superclasses_->matrix().to(device_);
    superclass_of_ = torch::tensor(superclasses_->superclass_of, torch::kLong);
  }

  // A head trained for other classes than this run's (names stored with the checkpoint) means
  // other things even when the count matches (timm would keep it): true when so, and said.
  bool init_head_is_for_other_classes(const io::Metadata& meta) const {
    const auto it = meta.find(models::kPretrainedCfgKey);
    if (it == meta.end()) {
      return false;
    }
    std::vector<std::string> names;
    try {
      names = json::parse(it->second).value("label_names", std::vector<std::string>{});
    } catch (const json::exception&) {
      return false;  // load_model_weights reports a malformed file
    }
    const auto ours = train_ds_->class_names();
    if (names.empty() || names == ours || static_cast<int64_t>(names.size()) != cfg_.model.num_classes()) {
      return false;  // the same classes, or a head that the class-count mismatch drops anyway
    }
    spdlog::info("init from {}: head.* dropped (a new head): it was trained for classes [{}], this run's are [{}]",
                 tc_.init, fmt::join(names, ", "), fmt::join(ours, ", "));
    return true;
  }

  // The model, its optimizer and the schedule (per optimizer step).
  void set_up_model() {
    model_ = models::make_model(cfg_.model);
    if (!tc_.init.empty()) {
      io::Metadata meta;
      auto state = io::read_checkpoint(tc_.init, &meta);
      const bool new_head = tc_.init_drop_head && init_head_is_for_other_classes(meta);
      spdlog::info(
          "init from {}: {}", tc_.init,
          models::load_model_weights(*model_, std::move(state), tc_.init, tc_.init_drop_head,
                                     new_head ? std::vector<std::string>{"head."} : std::vector<std::string>{}));
    }
    model_->to(device_);
    spdlog::info("model: {:.3f} M parameters", models::count_parameters(*model_) / 1e6);

    opt_ = make_optimizer(*model_, cfg_.optim);
    const int64_t steps_per_epoch = (batches_ + tc_.accum_steps - 1) / tc_.accum_steps;
    total_steps_ = steps_per_epoch * tc_.epochs;
    if (tc_.max_steps > 0) {
      total_steps_ = std::min(total_steps_, tc_.max_steps);
    }
    const auto warmup_steps = static_cast<int64_t>(std::llround(cfg_.optim.warmup_epochs * steps_per_epoch));
    schedule_ = std::make_unique<LrSchedule>(cfg_.optim, total_steps_, warmup_steps, steps_per_epoch);
    if (warmup_steps >= total_steps_ && main_rank_) {
      spdlog::warn(
          "the warm-up ({} steps) is as long as the run ({} steps): the learning rate ends at {:.3g}, {:.2g} of "
          "its peak {:.3g}; shorten optim.warmup_epochs",
          warmup_steps, total_steps_, schedule_->at(total_steps_ - 1), schedule_->at(total_steps_ - 1) / cfg_.optim.lr,
          cfg_.optim.lr);
    }
  }

  // The run folder, a resumed state, the ranks' common start and the metrics log.
  void set_up_run() {
    // Rank 0 owns the folder (lock, checks, clean-up); the other ranks only read from it.
    const RunDirMode mode = options_.resume      ? RunDirMode::Resume
                            : options_.overwrite ? RunDirMode::Overwrite
                                                 : RunDirMode::New;
    run_ = std::make_unique<RunDir>(tc_.out_dir, mode, main_rank_);
    std::optional<std::string> resume_state;
    io::Metadata last_meta;
    io::StateDict last_weights;
    if (options_.resume && file_exists(run_->last())) {
      last_weights = io::read_checkpoint(run_->last(), &last_meta);
      check<CheckpointError>(last_meta.count("moejet.step") > 0, "{}: no moejet.step in its metadata; not a moejet run",
                             run_->last());
      int64_t step = -1;
      try {
        step = std::stoll(last_meta.at("moejet.step"));
      } catch (const std::exception&) {
        throw CheckpointError(
            fmt::format("{}: moejet.step '{}' is not a step number", run_->last(), last_meta.at("moejet.step")));
      }
      resume_state = run_->resumable_state(step);
    }
    if (resume_state) {
      io::load_state_dict(*model_, last_weights, {}, run_->last());
      state_ = load_train_state(*resume_state, *opt_.optimizer);
      check<CheckpointError>(std::to_string(state_.step) == last_meta.at("moejet.step"),
                             "{}: weights are from step {} but {} is from step {}; refusing to mix them", run_->last(),
                             last_meta.at("moejet.step"), *resume_state, state_.step);
      spdlog::info("resumed from {} after step {}: epoch {}/{}, batch {}", run_->last(), state_.step, state_.epoch + 1,
                   tc_.epochs, state_.batch);
    } else if (options_.resume) {
      spdlog::info("--resume: nothing to resume in {}; starting a new run", run_->dir());
    }
    if (dist_) {
      // Same init everywhere by seed; rank 0's weights (and resumed state) win regardless.
      dist_->broadcast(model_->parameters());
      dist_->broadcast(model_->buffers());
      torch::manual_seed(tc_.seed + static_cast<uint64_t>(dist_->rank()));  // distinct dropout draws per rank
    }
    if (main_rank_) {
      write_json_file(run_->file("config.json"), to_json(cfg_));
      // A resumed run keeps the records up to its step; with nothing to resume, a fresh log (a run
      // killed before its first checkpoint had logged its start evaluation, which comes again).
      log_file_.emplace(run_->file("metrics.jsonl"), resume_state ? state_.step : -1);
    }
    model_json_ = cfg_.model;
    result_.out_dir = run_->dir();
    result_.best_top1 = state_.best_top1;
  }

  void log(const json& record) {
    if (log_file_) {
      log_file_->write(record);
    }
  }

  // The signal every rank stops for. A rank whose own signal has not arrived yet (the launcher
  // forwards it to each worker in turn) takes the one the others saw, so that all end alike: the
  // most seen, the lowest number on a tie. Counting them, not summing their numbers, keeps
  // SIGINT on one rank from reading as another signal.
  int interrupt_agreed() {
    int sig = InterruptGuard::requested();
    if (dist_) {
      constexpr int kSignals = 65;
      auto seen = torch::zeros({kSignals}, torch::kDouble);
      if (sig > 0 && sig < kSignals) {
        seen[sig] = 1.0;
      }
      seen = dist_->sum(seen);
      sig = seen.max().item<double>() > 0 ? static_cast<int>(seen.argmax().item<int64_t>()) : 0;
    }
    return sig;
  }

  // One epoch of optimizer steps (or what is left of it after a resume, up to max_steps).
  void run_epoch(int64_t epoch) {
    train_loader_->start_epoch(epoch, state_.batch);
    // The bar counts the batches this epoch will run: all of them, or up to --max-steps.
    const int64_t epoch_batches = std::min(batches_ - state_.batch, (total_steps_ - state_.step) * tc_.accum_steps);
    auto progress =
        start_progress(progress_, fmt::format("epoch {}/{}", epoch + 1, tc_.epochs), epoch_batches, "batch");
    Window window;
    const auto t0 = std::chrono::steady_clock::now();
    window.start = t0;
    next_batch_ = state_.batch;
    data::Batch batch;
    clear_grads(*opt_.optimizer);
    while (!stop_ && train_loader_->next(batch)) {
      const double loss_value = forward_backward(epoch, batch, window);
      next_batch_ = batch.index + 1;
      if (next_batch_ % tc_.accum_steps == 0 || next_batch_ == batches_) {
        optimizer_step(epoch, window);
      }
      progress->advance(1, fmt::format("loss {:.4f} lr {:.2e}", loss_value, schedule_->at(state_.step)));
    }
    train_seconds_ += seconds_between(t0, std::chrono::steady_clock::now());
    progress->finish();
  }

  // The running sums of a logging window (log_every optimizer steps).
  struct Window {
    double loss = 0, aux = 0, images = 0;
    int64_t batches = 0;
    std::chrono::steady_clock::time_point start;
  };

  // Loss and gradients of one batch; returns its loss.
  double forward_backward(int64_t epoch, const data::Batch& batch, Window& window) {
    // Mixing draws come from (seed, epoch, batch) so a resumed run repeats them exactly.
    data::Rng mix_rng(tc_.seed * 1000003ULL + static_cast<uint64_t>(epoch) * 7919ULL +
                      static_cast<uint64_t>(batch.index));
    auto mixed = data::mix_batch(batch.images, batch.labels, num_classes_, cfg_.augment, tc_.label_smoothing, mix_rng);
    // Routing statistics cost a few reductions per MoE layer: only on steps that log them.
    const bool log_step = (state_.step + 1) % tc_.log_every == 0;
    for (auto& entry : model_->moe_layer_list) {
      entry.second->collect_stats = log_step;
    }
    auto logits = model_->forward(mixed.images.to(device_));
    auto loss = soft_target_cross_entropy(logits, mixed.targets.to(device_));
    torch::Tensor aux = model_->moe_aux_loss();
    if (superclasses_ && tc_.router_loss_weight > 0) {
      // Soft class targets (mixup, smoothing) map to soft super-class targets.
      auto router_loss =
          soft_target_cross_entropy(model_->last_routing.logits, mixed.targets.to(device_).mm(superclass_matrix_));
      aux = aux.defined() ? aux + tc_.router_loss_weight * router_loss : tc_.router_loss_weight * router_loss;
    }
    if (aux.defined()) {
      window.aux += aux.item<double>();
      loss = loss + aux;
    }
    const double loss_value = loss.item<double>();
    if (!std::isfinite(loss_value)) {
      throw Error(
          fmt::format("training stopped: loss is {} at epoch {}, batch {}, step {}; the last good checkpoint "
                      "is {} (try a lower optim.lr or optim.clip_grad)",
                      loss_value, epoch, batch.index, state_.step,
                      file_exists(run_->last()) ? run_->last() : std::string("<none yet>")));
    }
    (tc_.accum_steps > 1 ? loss / static_cast<double>(tc_.accum_steps) : loss).backward();
    window.loss += loss_value;
    window.batches += 1;
    window.images += static_cast<double>(batch.images.size(0));
    images_seen_ += static_cast<double>(batch.images.size(0));
    return loss_value;
  }

  // The update from the accumulated gradients, a signal check, and the window's log line.
  void optimizer_step(int64_t epoch, Window& window) {
    const double lr = schedule_->at(state_.step);
    opt_.set_lr(lr);
    if (dist_) {
      dist_->average_gradients(model_->parameters());
    }
    if (cfg_.optim.clip_grad > 0) {
      torch::nn::utils::clip_grad_norm_(model_->parameters(), cfg_.optim.clip_grad);
    }
    opt_.optimizer->step();
    clear_grads(*opt_.optimizer);
    state_.step += 1;
    fault_point("step", state_.step);
    fault_point("interrupt", state_.step);
    // A signal on the last step changes nothing: the run ends there anyway, evaluated.
    if (const int sig = interrupt_agreed(); sig && state_.step < total_steps_) {
      result_.interrupted_by = sig;
      stop_ = true;
    }
    if (state_.step % tc_.log_every == 0) {
      auto now = std::chrono::steady_clock::now();
      double secs = seconds_between(window.start, now);
      if (dist_) {  // the window's loss is the mean over all ranks, images their total
        auto w = dist_->sum(torch::tensor({window.loss, window.aux, window.images}, torch::kDouble));
        window.loss = w[0].item<double>() / dist_->world_size();
        window.aux = w[1].item<double>() / dist_->world_size();
        window.images = w[2].item<double>();
      }
      json record = {{"event", "train"},
                     {"epoch", epoch},
                     {"step", state_.step},
                     {"loss", window.loss / window.batches},
                     {"lr", lr},
                     {"img_per_s", secs > 0 ? window.images / secs : 0.0}};
      if (!model_->moe_layer_list.empty()) {
        record["aux_loss"] = window.aux / window.batches;
        record["moe"] = moe_stats_json(model_->moe_layer_list);
      }
      log(record);
      window = Window{};
      window.start = now;
    }
    stop_ = stop_ || state_.step >= total_steps_;
  }

  eval::EvalResult evaluate(int64_t epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    model_->eval();
    eval::RouterFn router;
    if (model_->router) {
      router = [&]() { return model_->last_routing.logits; };
    }
    auto r = eval::evaluate([&](const torch::Tensor& x) { return model_->forward(x); }, *eval_loader_, num_classes_,
                            device_, progress_, router, superclass_of_);
    model_->train();
    eval_seconds_ += seconds_between(t0, std::chrono::steady_clock::now());
    json record = {{"event", "eval"}, {"epoch", epoch}, {"step", state_.step}, {"top1", r.top1},
                   {"top5", r.top5},  {"loss", r.loss}, {"count", r.count}};
    if (r.router_top1 >= 0) {
      record["router_top1"] = r.router_top1;
    }
    log(record);
    // Epochs are 1-based wherever a person reads them (bar, log); metrics.jsonl keeps 0-based ids.
    spdlog::info("{} eval: top1 {:.2f}% top5 {:.2f}% loss {:.4f}{}",
                 epoch < 0 ? std::string("before training,") : fmt::format("epoch {}/{}", epoch + 1, tc_.epochs),
                 r.top1, r.top5, r.loss,
                 r.router_top1 >= 0 ? fmt::format(" router {:.2f}%", r.router_top1) : std::string());
    if (epoch >= 0) {
      result_.final_top1 = r.top1;
    }
    return r;
  }

  // After an epoch: the ranks' agreement, the evaluation, the checkpoints. False when the run
  // stops here (a signal, or stop_after_epochs).
  bool end_epoch(int64_t epoch) {
    const bool epoch_done = next_batch_ >= batches_;
    state_.epoch = epoch_done ? epoch + 1 : epoch;
    state_.batch = epoch_done ? 0 : next_batch_;
    result_.epochs_run += 1;
    if (dist_) {
      // Replicas must agree after identical averaged updates; a drift means a broken setup.
      const double drift = dist_->max_divergence(model_->parameters());
      log({{"event", "sync"},
           {"epoch", epoch},
           {"step", state_.step},
           {"world_size", dist_->world_size()},
           {"max_param_divergence", drift}});
      check<Error>(drift < 1e-3, "distributed: parameters of the ranks diverged by {} at step {}", drift, state_.step);
    }
    // An interrupted run skips the evaluation: the user is waiting for the prompt.
    if (main_rank_ && !result_.interrupted_by &&
        ((epoch + 1) % tc_.eval_every == 0 || epoch + 1 == tc_.epochs || stop_)) {
      auto r = evaluate(epoch);
      const auto t0 = std::chrono::steady_clock::now();
      if (r.top1 > state_.best_top1) {
        state_.best_top1 = r.top1;
        save_model_checkpoint(run_->best(), *model_, model_json_, state_, checkpoint_extra_);
        best_step_ = state_.step;
      }
      write_json_file(run_->file("eval.json"), r.to_json(eval_ds_->class_names()));
      checkpoint_seconds_ += seconds_between(t0, std::chrono::steady_clock::now());
    }
    // A signal that came during the evaluation or the write stops the run at this epoch's end,
    // unless the run ends here anyway. Every rank calls it at the same points (an all-reduce).
    const auto check_signal = [&] {
      if (!result_.interrupted_by && !stop_ && epoch + 1 < tc_.epochs) {
        result_.interrupted_by = interrupt_agreed();
      }
    };
    check_signal();  // before deciding to write: a stopped run always gets its checkpoint
    const bool stop_asked = options_.stop_after_epochs > 0 && result_.epochs_run >= options_.stop_after_epochs;
    // Every checkpoint_every-th epoch, and whenever the run ends or stops: a stopped run always
    // resumes from where it stopped, a killed one from its last checkpoint.
    const bool due = (tc_.checkpoint_every > 0 && epoch_done && state_.epoch % tc_.checkpoint_every == 0) || stop_ ||
                     state_.epoch >= tc_.epochs || result_.interrupted_by || stop_asked;
    if (main_rank_ && due) {
      const auto t0 = std::chrono::steady_clock::now();
      // The state of this step first, under its own name; the weights' rename then switches the
      // run to it (see run_dir.h), so a kill anywhere leaves a pair that resumes.
      save_train_state(run_->state_for(state_.step), *opt_.optimizer, state_);
      fault_point("state-written", state_.step);
      if (best_step_ == state_.step) {  // the same bytes, just written: the run's end, mostly
        link_atomic(run_->best(), run_->last());
      } else {
        save_model_checkpoint(run_->last(), *model_, model_json_, state_, checkpoint_extra_);
      }
      fault_point("weights-written", state_.step);
      run_->prune_states(state_.step);
      checkpoint_seconds_ += seconds_between(t0, std::chrono::steady_clock::now());
    }
    if (dist_) {
      dist_->barrier();  // the others wait while rank 0 evaluates and writes
    }
    if (due) {
      check_signal();  // a signal during the write: it is written
    }
    if (result_.interrupted_by) {
      log({{"event", "interrupted"},
           {"epoch", epoch},
           {"step", state_.step},
           {"signal", result_.interrupted_by == SIGINT ? "SIGINT" : "SIGTERM"}});
      spdlog::warn(
          "interrupted ({}) after step {}: wrote a resumable checkpoint to {}; continue with "
          "--resume",
          result_.interrupted_by == SIGINT ? "Ctrl-C" : "SIGTERM", state_.step, run_->dir());
      return false;
    }
    if (stop_asked) {
      spdlog::info("stopping after {} epoch(s) as asked; continue with --resume", result_.epochs_run);
      return false;
    }
    return true;
  }

  TrainConfig cfg_;
  const TrainLoopConfig& tc_;
  TrainOptions options_;
  torch::Device device_{torch::kCPU};
  kernels::Precision precision_ = kernels::Precision::fp32;
  std::unique_ptr<Distributed> dist_;
  bool main_rank_ = true;
  ProgressReporter* progress_ = nullptr;

  data::DatasetPtr train_ds_, eval_ds_;
  std::unique_ptr<data::Loader> train_loader_, eval_loader_;
  int64_t num_classes_ = 0, batches_ = 0;

  std::optional<data::SuperClasses> superclasses_;
  torch::Tensor superclass_matrix_, superclass_of_;
  io::Metadata checkpoint_extra_;

  models::ModelPtr model_;
  json model_json_;
  OptimizerBundle opt_;
  std::unique_ptr<LrSchedule> schedule_;
  int64_t total_steps_ = 0;

  std::unique_ptr<RunDir> run_;
  std::optional<MetricsLog> log_file_;
  TrainState state_;
  TrainResult result_;
  int64_t next_batch_ = 0;
  bool stop_ = false;
  const std::chrono::steady_clock::time_point created_;
  double images_seen_ = 0, train_seconds_ = 0, eval_seconds_ = 0, checkpoint_seconds_ = 0;
  int64_t best_step_ = -1;  // the step whose weights best() holds, when this process wrote them
};

}  // namespace

TrainResult run_training(const TrainConfig& config, const TrainOptions& options) {
  return Trainer(config, options).run();
}

}  // namespace moejet::train
