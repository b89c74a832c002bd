#include "moejet/eval/predict.h"

#include <algorithm>

#include <fmt/ranges.h>

#include <torch/torch.h>

#include "moejet/core/error.h"

namespace moejet::eval {

std::vector<Prediction> predict(const ForwardFn& forward, data::Loader& loader, int64_t k, torch::Device device,
                                ProgressReporter* reporter, const RouterFn& router) {
  check<ConfigError>(k > 0, "predict: top-k must be positive, got {}", k);
  torch::NoGradGuard no_grad;
  std::vector<Prediction> out;
  loader.start_epoch(0);
  auto progress = start_progress(reporter, "predict", loader.batches_per_epoch(), "batch");
  data::Batch batch;
  while (loader.next(batch)) {
    const auto logits = forward(batch.images.to(device)).detach().to(torch::kCPU, torch::kFloat);
    TORCH_CHECK(logits.dim() == 2, "predict: expected logits [B, K], got ", logits.sizes());
    const auto probs = torch::softmax(logits, 1);
    const auto [top_p, top_i] = probs.topk(std::min<int64_t>(k, probs.size(1)), 1);
    std::vector<int64_t> experts;
    if (router) {
      const auto e = router().argmax(-1).to(torch::kCPU, torch::kLong).contiguous();
      experts.assign(e.data_ptr<int64_t>(), e.data_ptr<int64_t>() + e.numel());
    }
    const auto pa = top_p.accessor<float, 2>();
    const auto ia = top_i.accessor<int64_t, 2>();
    for (int64_t b = 0; b < top_p.size(0); ++b) {
      Prediction p;
      for (int64_t j = 0; j < top_p.size(1); ++j) {
        p.classes.push_back(ia[b][j]);
        p.probs.push_back(pa[b][j]);
      }
      if (!experts.empty()) {
        p.expert = experts.at(static_cast<size_t>(b));
      }
      out.push_back(std::move(p));
    }
    progress->advance(1);
  }
  progress->finish(fmt::format("{} images", out.size()));
  return out;
}

std::string PredictionLabels::class_name(int64_t c) const {
  return c >= 0 && c < static_cast<int64_t>(class_names.size()) ? class_names[c] : std::to_string(c);
}

json prediction_json(const std::string& file, const Prediction& p, const PredictionLabels& labels) {
  json top = json::array();
  for (size_t j = 0; j < p.classes.size(); ++j) {
    top.push_back({{"class", p.classes[j]}, {"name", labels.class_name(p.classes[j])}, {"prob", p.probs[j]}});
  }
  json j = {{"file", file}, {"top", top}};
  if (p.expert >= 0) {
    j["expert"] = p.expert;
    if (p.expert < static_cast<int64_t>(labels.superclass_members.size())) {
      json names = json::array();
      for (int64_t c : labels.superclass_members[p.expert]) {
        names.push_back(labels.class_name(c));
      }
      j["superclass"] = names;
    }
  }
  return j;
}

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) {
    return s;
  }
  std::string q = "\"";
  for (char c : s) {
    q += c == '"' ? std::string("\"\"") : std::string(1, c);
  }
  return q + "\"";
}

}  // namespace

std::string format_predictions(const std::vector<std::string>& files, const std::vector<Prediction>& predictions,
                               const PredictionLabels& labels, const std::string& format) {
  check<ConfigError>(files.size() == predictions.size(), "predict: {} files but {} predictions", files.size(),
                     predictions.size());
  check<ConfigError>(format == "table" || format == "jsonl" || format == "csv",
                     "predict: format must be table, jsonl or csv, got '{}'", format);
  const size_t k = predictions.empty() ? 0 : predictions[0].classes.size();
  const bool routed = !predictions.empty() && predictions[0].expert >= 0;
  std::string s;
  if (format == "jsonl") {
    for (size_t i = 0; i < files.size(); ++i) {
      s += prediction_json(files[i], predictions[i], labels).dump() + "\n";
    }
    return s;
  }
  if (format == "csv") {
    s += "file";
    for (size_t j = 1; j <= k; ++j) {
      s += fmt::format(",class_{0},name_{0},prob_{0}", j);
    }
    s += routed ? ",expert\n" : "\n";
    for (size_t i = 0; i < files.size(); ++i) {
      const auto& p = predictions[i];
      s += csv_field(files[i]);
      for (size_t j = 0; j < p.classes.size(); ++j) {
        s += fmt::format(",{},{},{:.6f}", p.classes[j], csv_field(labels.class_name(p.classes[j])), p.probs[j]);
      }
      s += routed ? fmt::format(",{}\n", p.expert) : "\n";
    }
    return s;
  }
  // table: the file column as wide as its longest entry, one "name prob%" cell per rank.
  size_t wf = 4, wc = 6;
  for (size_t i = 0; i < files.size(); ++i) {
    wf = std::max(wf, files[i].size());
    for (int64_t c : predictions[i].classes) {
      wc = std::max(wc, labels.class_name(c).size());
    }
  }
  s += fmt::format("{:<{}}", "file", wf);
  for (size_t j = 1; j <= k; ++j) {
    s += fmt::format("  {:<{}} {:>6}", fmt::format("top-{}", j), wc, "prob");
  }
  s += routed ? "  expert\n" : "\n";
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& p = predictions[i];
    s += fmt::format("{:<{}}", files[i], wf);
    for (size_t j = 0; j < p.classes.size(); ++j) {
      s += fmt::format("  {:<{}} {:>5.1f}%", labels.class_name(p.classes[j]), wc, 100.0 * p.probs[j]);
    }
    if (routed) {
      s += fmt::format("  {}", p.expert);
      if (p.expert < static_cast<int64_t>(labels.superclass_members.size())) {
        std::vector<std::string> names;
        for (int64_t c : labels.superclass_members[p.expert]) {
          names.push_back(labels.class_name(c));
        }
        s += fmt::format(" ({})", fmt::join(names, ", "));
      }
    }
    s += "\n";
  }
  return s;
}

}  // namespace moejet::eval
