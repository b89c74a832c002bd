#include "moejet/train/trainer.h"

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
#include "moejet/models/checkpoint_layout.h"
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

json moe_stats_json(const std::vector<std::pair<int64_t, std::shared_ptr<moe::MoeLayer>>>& layers) {
  json out = json::array();
  for (const auto& [block, layer] : layers) {
    const auto& st = layer->last_stats;
    json j = {{"block", block}, {"kind", layer->kind()}, {"dispatch_entropy", st.dispatch_entropy}};
    if (st.expert_load.defined() && st.expert_load.numel() > 0) {
      auto load = st.expert_load.to(torch::kDouble);
      const double mean = load.mean().item<double>();
      j["load_max_over_mean"] = load.max().item<double>() / mean;
      j["load_min_over_mean"] = load.min().item<double>() / mean;
      j["load_cv"] = load.numel() > 1 ? load.std().item<double>() / mean : 0.0;
      // The share of each expert, for utilisation plots (4 decimals keep the lines short).
      auto rounded = (load * 1e4).round().div(1e4).contiguous();
      j["load"] = std::vector<double>(rounded.data_ptr<double>(), rounded.data_ptr<double>() + rounded.numel());
    }
    if (layer->kind() == "topk") {
      j["dropped_fraction"] = st.dropped_fraction;
    }
    out.push_back(j);
  }
  return out;
}

}  // namespace

TrainResult run_training(const TrainConfig& cfg_in, const TrainOptions& options) {
  TrainConfig cfg = cfg_in;
  cfg.validate();
  const auto& tc = cfg.train;
  if (tc.threads > 0) {
    torch::set_num_threads(tc.threads);
  }
  torch::Device device = parse_device(tc.device);
  torch::manual_seed(tc.seed);
  std::unique_ptr<Distributed> dist;
  if (options.dist.enabled()) {
    dist = std::make_unique<Distributed>(options.dist, device);
    spdlog::info("distributed: rank {} of {} (c10d, {} per rank of the global batch {})", dist->rank(),
                 dist->world_size(), tc.batch_size / dist->world_size(), tc.batch_size);
  }
  const bool main_rank = !dist || dist->is_main();

  // Data.
  auto train_ds = data::open_split(cfg.data, cfg.data.train_split, cfg.data.train_limit, tc.seed);
  auto eval_ds = data::open_split(cfg.data, cfg.data.eval_split, cfg.data.eval_limit, tc.seed + 1);
  spdlog::info("train data: {}", train_ds->describe());
  spdlog::info("eval data: {}", eval_ds->describe());
  {
    // Scores against another split's labelling would be silently wrong.
    const auto tn = train_ds->class_names(), en = eval_ds->class_names();
    check<ConfigError>(tn.empty() || en.empty() || tn == en,
                       "the eval split's classes ({}) are not the training split's ({}); both splits need the same "
                       "class folders",
                       fmt::join(en, ", "), fmt::join(tn, ", "));
  }
  check<ConfigError>(cfg.model.num_classes() == train_ds->num_classes(),
                     "config 'model.num_classes' is {} but the training data has {} classes", cfg.model.num_classes(),
                     train_ds->num_classes());
  check<ConfigError>(cfg.model.in_chans() == train_ds->channels(),
                     "config 'model.in_chans' is {} but the training images have {} channels", cfg.model.in_chans(),
                     train_ds->channels());
  if (cfg.augment.image_size == 0) {
    cfg.augment.image_size = cfg.model.img_size();
  }
  check<ConfigError>(cfg.augment.image_size == cfg.model.img_size(),
                     "config 'augment.image_size' ({}) differs from 'model.img_size' ({})", cfg.augment.image_size,
                     cfg.model.img_size());
  const int64_t K = cfg.model.num_classes();

  data::LoaderOptions lo;
  lo.batch_size = tc.batch_size;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.num_workers = cfg.data.num_workers;
  lo.seed = tc.seed;
  if (dist) {
    check<ConfigError>(tc.batch_size % dist->world_size() == 0,
                       "config 'train.batch_size' ({}) is the global batch: it must split evenly over {} processes",
                       tc.batch_size, dist->world_size());
    lo.shard = dist->rank();
    lo.shards = dist->world_size();
  }
  data::Loader train_loader(train_ds, data::make_train_transform(cfg.augment, train_ds->channels()), lo);
  data::LoaderOptions elo = lo;
  elo.shard = 0;  // rank 0 evaluates the whole eval set
  elo.shards = 1;
  elo.batch_size = std::max<int64_t>(tc.batch_size, 256);
  elo.shuffle = false;
  elo.drop_last = false;
  data::Loader eval_loader(eval_ds, data::make_eval_transform(cfg.augment, eval_ds->channels()), elo);
  const int64_t batches = train_loader.batches_per_epoch();
  check<ConfigError>(batches > 0, "training set has {} images, fewer than one batch of {}", train_ds->size(),
                     tc.batch_size);

  // Mobile V-MoE router supervision.
  std::optional<data::SuperClasses> superclasses;
  io::Metadata checkpoint_extra;
  // How the model sees an image and what its outputs mean, and where its data came from: eval
  // and later commands read these instead of guessing.
  checkpoint_extra[models::kPretrainedCfgKey] =
      data::to_pretrained_cfg(
          data::preprocess_of(cfg.augment, train_ds->channels(), cfg.model.img_size(), train_ds->class_names()))
          .dump();
  checkpoint_extra[models::kDataKey] = to_json(cfg)["data"].dump();
  if (!tc.superclasses.empty()) {
    if (tc.superclasses == "random") {
      superclasses = data::random_superclasses(K, cfg.model.moe().get<moe::PerImageMoeOptions>().num_experts, tc.seed);
    } else {
      superclasses = data::read_superclasses(tc.superclasses, K);
    }
    superclasses->class_names = train_ds->class_names();
    check<ConfigError>(superclasses->num_superclasses == cfg.model.moe().get<moe::PerImageMoeOptions>().num_experts,
                       "{}: {} super-classes for a router over {} experts (model.moe.num_experts)", tc.superclasses,
                       superclasses->num_superclasses, cfg.model.moe().get<moe::PerImageMoeOptions>().num_experts);
    checkpoint_extra[models::kSuperclassesKey] = superclasses->to_json().dump();
    spdlog::info("router supervised by super-classes ({}), weight {}: {}", tc.superclasses, tc.router_loss_weight,
                 superclasses->to_json()["groups"].dump());
  }
  const torch::Tensor superclass_matrix = superclasses ? superclasses->matrix().to(device) : torch::Tensor();
  const torch::Tensor superclass_of =
      superclasses ? torch::tensor(superclasses->superclass_of, torch::kLong) : torch::Tensor();

  // Model.
  models::ModelPtr model = models::make_model(cfg.model);
  if (!tc.init.empty()) {
    spdlog::info("init from {}: {}", tc.init, models::load_model_weights(*model, tc.init, tc.init_drop_head));
  }
  model->to(device);
  spdlog::info("model: {:.3f} M parameters", models::count_parameters(*model) / 1e6);

  // Optimizer and schedule (per optimizer step).
  auto opt = make_optimizer(*model, cfg.optim);
  const int64_t steps_per_epoch = (batches + tc.accum_steps - 1) / tc.accum_steps;
  int64_t total_steps = steps_per_epoch * tc.epochs;
  if (tc.max_steps > 0) {
    total_steps = std::min(total_steps, tc.max_steps);
  }
  const auto warmup_steps = static_cast<int64_t>(std::llround(cfg.optim.warmup_epochs * steps_per_epoch));
  LrSchedule schedule(cfg.optim, total_steps, warmup_steps, steps_per_epoch);
  if (warmup_steps >= total_steps && main_rank) {
    spdlog::warn(
        "the warm-up ({} steps) is as long as the run ({} steps): the learning rate ends at {:.3g}, {:.2g} of "
        "its peak {:.3g}; shorten optim.warmup_epochs",
        warmup_steps, total_steps, schedule.at(total_steps - 1), schedule.at(total_steps - 1) / cfg.optim.lr,
        cfg.optim.lr);
  }

  // Rank 0 owns the folder (lock, checks, clean-up); the other ranks only read from it.
  const RunDirMode mode = options.resume      ? RunDirMode::Resume
                          : options.overwrite ? RunDirMode::Overwrite
                                              : RunDirMode::New;
  RunDir run(tc.out_dir, mode, main_rank);
  TrainState state;
  std::optional<std::string> resume_state;
  io::Metadata last_meta;
  io::StateDict last_weights;
  if (options.resume && file_exists(run.last())) {
    last_weights = io::read_checkpoint(run.last(), &last_meta);
    check<CheckpointError>(last_meta.count("moejet.step") > 0, "{}: no moejet.step in its metadata; not a moejet run",
                           run.last());
    int64_t step = -1;
    try {
      step = std::stoll(last_meta.at("moejet.step"));
    } catch (const std::exception&) {
      throw CheckpointError(
          fmt::format("{}: moejet.step '{}' is not a step number", run.last(), last_meta.at("moejet.step")));
    }
    resume_state = run.resumable_state(step);
  }
  if (resume_state) {
    io::load_state_dict(*model, last_weights, {}, run.last());
    state = load_train_state(*resume_state, *opt.optimizer);
    check<CheckpointError>(std::to_string(state.step) == last_meta.at("moejet.step"),
                           "{}: weights are from step {} but {} is from step {}; refusing to mix them", run.last(),
                           last_meta.at("moejet.step"), *resume_state, state.step);
    spdlog::info("resumed from {} after step {}: epoch {}/{}, batch {}", run.last(), state.step, state.epoch + 1,
                 tc.epochs, state.batch);
  } else if (options.resume) {
    spdlog::info("--resume: nothing to resume in {}; starting a new run", run.dir());
  }
  if (dist) {
    // Same init everywhere by seed; rank 0's weights (and resumed state) win regardless.
    dist->broadcast(model->parameters());
    dist->broadcast(model->buffers());
    torch::manual_seed(tc.seed + static_cast<uint64_t>(dist->rank()));  // distinct dropout draws per rank
  }
  std::optional<MetricsLog> log_file;
  if (main_rank) {
    write_json_file(run.file("config.json"), to_json(cfg));
    log_file.emplace(run.file("metrics.jsonl"), options.resume ? state.step : -1);
  }
  auto log_write = [&](const json& record) {
    if (log_file)
      log_file->write(record);
  };
  const json model_json = cfg.model;

  TrainResult result;
  result.out_dir = run.dir();
  result.best_top1 = state.best_top1;
  double images_seen = 0, train_seconds = 0;

  auto do_eval = [&](int64_t epoch) {
    model->eval();
    eval::RouterFn router;
    if (model->router) {
      router = [&]() { return model->last_routing.logits; };
    }
    auto r = eval::evaluate([&](const torch::Tensor& x) { return model->forward(x); }, eval_loader, K, device,
                            options.show_progress, router, superclass_of);
    model->train();
    json record = {{"event", "eval"}, {"epoch", epoch}, {"step", state.step}, {"top1", r.top1},
                   {"top5", r.top5},  {"loss", r.loss}, {"count", r.count}};
    if (r.router_top1 >= 0) {
      record["router_top1"] = r.router_top1;
    }
    log_write(record);
    // Epochs are 1-based wherever a person reads them (bar, log); metrics.jsonl keeps 0-based ids.
    spdlog::info("epoch {}/{} eval: top1 {:.2f}% top5 {:.2f}% loss {:.4f}{}", epoch + 1, tc.epochs, r.top1, r.top5,
                 r.loss, r.router_top1 >= 0 ? fmt::format(" router {:.2f}%", r.router_top1) : std::string());
    result.final_top1 = r.top1;
    return r;
  };

  Progress::set_quiet(!options.show_progress || !main_rank);
  // Ctrl-C or SIGTERM: finish the step, write a resumable checkpoint, return. Every rank must
  // stop at the same step, so under data parallelism they agree by all-reduce.
  InterruptGuard interrupt_guard;
  auto interrupt_agreed = [&]() {
    int sig = InterruptGuard::requested();
    if (dist) {
      auto any = dist->sum(torch::tensor({static_cast<double>(sig)}, torch::kDouble));
      sig = any.item<double>() > 0 ? (sig ? sig : SIGTERM) : 0;
    }
    return sig;
  };
  bool stop = state.step >= total_steps;
  model->train();
  for (int64_t epoch = state.epoch; epoch < tc.epochs && !stop; ++epoch) {
    train_loader.start_epoch(epoch, state.batch);
    // The bar counts the batches this epoch will run: all of them, or up to --max-steps.
    const int64_t epoch_batches = std::min(batches - state.batch, (total_steps - state.step) * tc.accum_steps);
    Progress progress(fmt::format("epoch {}/{}", epoch + 1, tc.epochs), epoch_batches, "batch");
    double window_loss = 0, window_aux = 0;
    int64_t window_n = 0;
    double window_images = 0;
    auto t0 = std::chrono::steady_clock::now();
    auto window_t0 = t0;
    int64_t next_batch = state.batch;
    data::Batch batch;
    clear_grads(*opt.optimizer);
    while (!stop && train_loader.next(batch)) {
      // Mixing draws come from (seed, epoch, batch) so a resumed run repeats them exactly.
      data::Rng mix_rng(tc.seed * 1000003ULL + static_cast<uint64_t>(epoch) * 7919ULL +
                        static_cast<uint64_t>(batch.index));
      auto mixed = data::mix_batch(batch.images, batch.labels, K, cfg.augment, tc.label_smoothing, mix_rng);
      // Routing statistics cost a few reductions per MoE layer: only on steps that log them.
      const bool log_step = (state.step + 1) % tc.log_every == 0;
      for (auto& entry : model->moe_layer_list) {
        entry.second->collect_stats = log_step;
      }
      auto logits = model->forward(mixed.images.to(device));
      auto loss = soft_target_cross_entropy(logits, mixed.targets.to(device));
      torch::Tensor aux = model->moe_aux_loss();
      if (superclasses && tc.router_loss_weight > 0) {
        // Soft class targets (mixup, smoothing) map to soft super-class targets.
        auto router_loss =
            soft_target_cross_entropy(model->last_routing.logits, mixed.targets.to(device).mm(superclass_matrix));
        aux = aux.defined() ? aux + tc.router_loss_weight * router_loss : tc.router_loss_weight * router_loss;
      }
      if (aux.defined()) {
        window_aux += aux.item<double>();
        loss = loss + aux;
      }
      double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        throw Error(
            fmt::format("training stopped: loss is {} at epoch {}, batch {}, step {}; the last good checkpoint "
                        "is {} (try a lower optim.lr or optim.clip_grad)",
                        loss_value, epoch, batch.index, state.step,
                        file_exists(run.last()) ? run.last() : std::string("<none yet>")));
      }
      (tc.accum_steps > 1 ? loss / static_cast<double>(tc.accum_steps) : loss).backward();
      window_loss += loss_value;
      window_n += 1;
      window_images += static_cast<double>(batch.images.size(0));
      images_seen += static_cast<double>(batch.images.size(0));
      next_batch = batch.index + 1;
      if (next_batch % tc.accum_steps == 0 || next_batch == batches) {
        const double lr = schedule.at(state.step);
        opt.set_lr(lr);
        if (dist) {
          dist->average_gradients(model->parameters());
        }
        if (cfg.optim.clip_grad > 0) {
          torch::nn::utils::clip_grad_norm_(model->parameters(), cfg.optim.clip_grad);
        }
        opt.optimizer->step();
        clear_grads(*opt.optimizer);
        state.step += 1;
        fault_point("step", state.step);
        fault_point("interrupt", state.step);
        // A signal on the last step changes nothing: the run ends there anyway, evaluated.
        if (const int sig = interrupt_agreed(); sig && state.step < total_steps) {
          result.interrupted_by = sig;
          stop = true;
        }
        if (state.step % tc.log_every == 0) {
          auto now = std::chrono::steady_clock::now();
          double secs = std::chrono::duration<double>(now - window_t0).count();
          if (dist) {  // the window's loss is the mean over all ranks, images their total
            auto w = dist->sum(torch::tensor({window_loss, window_aux, window_images}, torch::kDouble));
            window_loss = w[0].item<double>() / dist->world_size();
            window_aux = w[1].item<double>() / dist->world_size();
            window_images = w[2].item<double>();
          }
          json record = {{"event", "train"},   {"epoch", epoch},
                         {"step", state.step}, {"loss", window_loss / window_n},
                         {"lr", lr},           {"img_per_s", secs > 0 ? window_images / secs : 0.0}};
          if (!model->moe_layer_list.empty()) {
            record["aux_loss"] = window_aux / window_n;
            record["moe"] = moe_stats_json(model->moe_layer_list);
          }
          log_write(record);
          window_aux = 0;
          window_loss = 0;
          window_n = 0;
          window_images = 0;
          window_t0 = now;
        }
        stop = stop || state.step >= total_steps;
      }
      progress.advance(1, fmt::format("loss {:.4f} lr {:.2e}", loss_value, schedule.at(state.step)));
    }
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.finish();
    const bool epoch_done = next_batch >= batches;
    state.epoch = epoch_done ? epoch + 1 : epoch;
    state.batch = epoch_done ? 0 : next_batch;
    result.epochs_run += 1;
    if (dist) {
      // Replicas must agree after identical averaged updates; a drift means a broken setup.
      const double drift = dist->max_divergence(model->parameters());
      log_write({{"event", "sync"},
                 {"epoch", epoch},
                 {"step", state.step},
                 {"world_size", dist->world_size()},
                 {"max_param_divergence", drift}});
      check<Error>(drift < 1e-3, "distributed: parameters of the ranks diverged by {} at step {}", drift, state.step);
    }
    // An interrupted run skips the evaluation: the user is waiting for the prompt.
    if (main_rank && !result.interrupted_by && ((epoch + 1) % tc.eval_every == 0 || epoch + 1 == tc.epochs || stop)) {
      auto r = do_eval(epoch);
      if (r.top1 > state.best_top1) {
        state.best_top1 = r.top1;
        save_model_checkpoint(run.best(), *model, model_json, state, checkpoint_extra);
      }
      write_json_file(run.file("eval.json"), r.to_json(eval_ds->class_names()));
    }
    if (main_rank) {
      // The state of this step first, under its own name; the weights' rename then switches the
      // run to it (see run_dir.h), so a kill anywhere leaves a pair that resumes.
      save_train_state(run.state_for(state.step), *opt.optimizer, state);
      fault_point("state-written", state.step);
      save_model_checkpoint(run.last(), *model, model_json, state, checkpoint_extra);
      fault_point("weights-written", state.step);
      run.prune_states(state.step);
    }
    if (dist) {
      dist->barrier();  // the others wait while rank 0 evaluates and writes
    }
    if (!result.interrupted_by && !stop && epoch + 1 < tc.epochs) {
      result.interrupted_by = interrupt_agreed();  // a signal during the evaluation or the write
    }
    if (result.interrupted_by) {
      log_write({{"event", "interrupted"},
                 {"epoch", epoch},
                 {"step", state.step},
                 {"signal", result.interrupted_by == SIGINT ? "SIGINT" : "SIGTERM"}});
      spdlog::warn(
          "interrupted ({}) after step {}: wrote a resumable checkpoint to {}; continue with "
          "--resume",
          result.interrupted_by == SIGINT ? "Ctrl-C" : "SIGTERM", state.step, run.dir());
      break;
    }
    if (options.stop_after_epochs > 0 && result.epochs_run >= options.stop_after_epochs) {
      spdlog::info("stopping after {} epoch(s) as asked; continue with --resume", result.epochs_run);
      break;
    }
  }
  result.best_top1 = state.best_top1;
  result.steps = state.step;
  // Every rank loads its share of each global batch: the job's rate is world_size times ours.
  const double world = dist ? static_cast<double>(dist->world_size()) : 1.0;
  result.train_images_per_second = train_seconds > 0 ? world * images_seen / train_seconds : 0.0;
  if (!result.interrupted_by)
    log_write({{"event", "done"},
               {"step", state.step},
               {"best_top1", state.best_top1},
               {"final_top1", result.final_top1},
               {"train_img_per_s", result.train_images_per_second}});
  return result;
}

}  // namespace moejet::train
