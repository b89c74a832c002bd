#include "moejet/train/checkpoint.h"

#include <cstring>
#include <sstream>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/models/model_file.h"

namespace moejet::train {

void save_model_checkpoint(const std::string& path, const torch::nn::Module& model, const json& model_config,
                           const TrainState& state, const io::Metadata& extra) {
  io::Metadata meta = extra;
  meta["moejet.epoch"] = std::to_string(state.epoch);
  meta["moejet.step"] = std::to_string(state.step);
  models::save_model(path, model, model_config, std::move(meta));
}

void save_train_state(const std::string& path, torch::optim::Optimizer& optimizer, const TrainState& state) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  archive.write("epoch", torch::tensor(state.epoch));
  archive.write("batch", torch::tensor(state.batch));
  archive.write("step", torch::tensor(state.step));
  archive.write("best_top1", torch::full({}, state.best_top1, torch::TensorOptions().dtype(torch::kDouble)));
  auto gen = at::detail::getDefaultCPUGenerator();
  torch::Tensor rng;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng = gen.get_state();
  }
  archive.write("cpu_rng", rng);
  write_atomic(path, [&](std::ostream& out) {
    // The zip writer must never see a failed write: it would throw again from its destructor and
    // terminate the process. Failures are remembered here and reported once it has finished.
    bool failed = false;
    archive.save_to([&](const void* data, size_t n) -> size_t {
      if (!failed) {
        out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
        failed = !out;
      }
      return n;
    });
    check<Error>(!failed, "{}: write failed (disk full?): {}", path, std::strerror(errno));
  });
}

TrainState load_train_state(const std::string& path, torch::optim::Optimizer& optimizer) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw CheckpointError(fmt::format("{}: cannot read training state: {}", path, e.what_without_backtrace()));
  }
  TrainState s;
  try {
    torch::serialize::InputArchive opt_archive;
    archive.read("optimizer", opt_archive);
    optimizer.load(opt_archive);
    // A fresh tensor per entry: InputArchive::read set_()s a defined tensor to the stored data, so
    // reusing one would read the double best_top1 through the int64 step tensor's dtype (its bits).
    auto read = [&](const char* key) {
      torch::Tensor t;
      archive.read(key, t);
      return t;
    };
    s.epoch = read("epoch").item<int64_t>();
    s.batch = read("batch").item<int64_t>();
    s.step = read("step").item<int64_t>();
    s.best_top1 = read("best_top1").to(torch::kDouble).item<double>();
    torch::Tensor rng;
    archive.read("cpu_rng", rng);
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng);
  } catch (const c10::Error& e) {
    throw CheckpointError(
        fmt::format("{}: training state does not match this model/optimizer: {}", path, e.what_without_backtrace()));
  }
  return s;
}

}  // namespace moejet::train
