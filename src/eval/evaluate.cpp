#include "moejet/eval/evaluate.h"

#include <cmath>
#include <limits>
#include <ostream>

#include <torch/torch.h>

#include "moejet/core/fs.h"
#include "moejet/core/progress.h"

namespace moejet::eval {

ConfusionAccumulator::ConfusionAccumulator(int64_t num_classes)
    : k_(num_classes), confusion_(torch::zeros({num_classes, num_classes}, torch::kLong)) {}

void ConfusionAccumulator::add(const torch::Tensor& logits_in, const torch::Tensor& labels_in) {
  auto logits = logits_in.detach().to(torch::kCPU, torch::kFloat);
  auto labels = labels_in.to(torch::kCPU, torch::kLong);
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) == k_, "evaluate: expected logits [B, ", k_, "], got ",
              logits.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), "evaluate: labels ", labels.sizes(),
              " do not match logits ", logits.sizes());
  const int64_t B = logits.size(0);
  const int64_t k = std::min<int64_t>(5, k_);
  auto topk = std::get<1>(logits.topk(k, 1));
  auto hit = topk.eq(labels.unsqueeze(1));
  correct1_ += hit.select(1, 0).sum().item<int64_t>();
  correct5_ += hit.any(1).sum().item<int64_t>();
  loss_sum_ += torch::nn::functional::cross_entropy(
                   logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
  auto pred = topk.select(1, 0);
  confusion_.view(-1).index_add_(0, labels * k_ + pred, torch::ones({B}, torch::kLong));
  count_ += B;
}

EvalResult ConfusionAccumulator::result() const {
  EvalResult r;
  r.count = count_;
  if (count_ > 0) {
    r.top1 = 100.0 * static_cast<double>(correct1_) / static_cast<double>(count_);
    r.top5 = 100.0 * static_cast<double>(correct5_) / static_cast<double>(count_);
    r.loss = loss_sum_ / static_cast<double>(count_);
  }
  r.confusion = confusion_.clone();
  return r;
}

std::vector<double> EvalResult::per_class_accuracy() const {
  std::vector<double> out;
  auto cm = confusion.to(torch::kCPU);
  for (int64_t c = 0; c < cm.size(0); ++c) {
    int64_t total = cm[c].sum().item<int64_t>();
    out.push_back(total > 0 ? 100.0 * static_cast<double>(cm[c][c].item<int64_t>()) / total
                            : std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

std::string EvalResult::summary(const std::string& data, const std::vector<std::string>& class_names,
                                int64_t router_ways) const {
  std::string out =
      fmt::format("{}: {} images, top1 {:.2f}%, top5 {:.2f}%, loss {:.4f}\n", data, count, top1, top5, loss);
  if (router_top1 >= 0) {
    out += fmt::format("router ({}-way super-classes): top1 {:.2f}%\n", router_ways, router_top1);
  }
  const auto acc = per_class_accuracy();
  for (size_t c = 0; c < acc.size(); ++c) {
    out += fmt::format("  {:>3} {:<20} {:6.2f}%\n", c, c < class_names.size() ? class_names[c] : "", acc[c]);
  }
  return out;
}

json EvalResult::to_json(const std::vector<std::string>& class_names) const {
  json per_class = json::object();
  auto acc = per_class_accuracy();
  for (size_t c = 0; c < acc.size(); ++c) {
    std::string name = c < class_names.size() ? class_names[c] : std::to_string(c);
    per_class[name] = std::isnan(acc[c]) ? json(nullptr) : json(acc[c]);
  }
  json cm = json::array();
  auto conf = confusion.to(torch::kCPU);
  for (int64_t r = 0; r < conf.size(0); ++r) {
    std::vector<int64_t> row(conf[r].data_ptr<int64_t>(), conf[r].data_ptr<int64_t>() + conf.size(1));
    cm.push_back(row);
  }
  json j = {{"count", count},
            {"top1", top1},
            {"top5", top5},
            {"loss", loss},
            {"per_class_top1", per_class},
            {"class_names", class_names},
            {"confusion", cm}};
  if (router_top1 >= 0) {
    j["router_top1"] = router_top1;
  }
  return j;
}

EvalResult evaluate(const ForwardFn& forward, data::Loader& loader, int64_t num_classes, torch::Device device,
                    ProgressReporter* reporter, const RouterFn& router, const torch::Tensor& superclass_of) {
  const bool measure_router = router && superclass_of.defined();
  const torch::Tensor superclass_table = measure_router ? superclass_of.to(torch::kCPU) : torch::Tensor();
  int64_t router_correct = 0, router_count = 0;
  torch::NoGradGuard no_grad;
  ConfusionAccumulator acc(num_classes);
  loader.start_epoch(0);
  auto progress = start_progress(reporter, "eval", loader.batches_per_epoch(), "batch");
  data::Batch batch;
  while (loader.next(batch)) {
    auto logits = forward(batch.images.to(device));
    acc.add(logits, batch.labels);
    if (measure_router) {
      auto target = superclass_table.index_select(0, batch.labels.to(torch::kCPU));
      auto pred = router().argmax(-1).to(torch::kCPU);
      router_correct += pred.eq(target).sum().item<int64_t>();
      router_count += target.size(0);
    }
    progress->advance(1);
  }
  auto r = acc.result();
  if (measure_router && router_count > 0) {
    r.router_top1 = 100.0 * static_cast<double>(router_correct) / static_cast<double>(router_count);
  }
  progress->finish(fmt::format("top1 {:.2f}%", r.top1));
  return r;
}

void write_confusion_csv(const std::string& path, const torch::Tensor& confusion,
                         const std::vector<std::string>& class_names) {
  auto cm = confusion.to(torch::kCPU, torch::kLong);
  auto name = [&](int64_t i) {
    std::string n = i < static_cast<int64_t>(class_names.size()) ? class_names[i] : std::to_string(i);
    // Quote names: some contain commas or slashes ("T-shirt/top").
    return "\"" + n + "\"";
  };
  write_atomic(path, [&](std::ostream& out) {
    out << "true\\pred";
    for (int64_t c = 0; c < cm.size(1); ++c) {
      out << "," << name(c);
    }
    out << "\n";
    for (int64_t r = 0; r < cm.size(0); ++r) {
      out << name(r);
      for (int64_t c = 0; c < cm.size(1); ++c) {
        out << "," << cm[r][c].item<int64_t>();
      }
      out << "\n";
    }
  });
}

}  // namespace moejet::eval
