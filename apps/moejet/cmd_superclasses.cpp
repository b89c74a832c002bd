#include <spdlog/spdlog.h>

#include <torch/torch.h>

#include "commands.h"
#include "moejet/core/error.h"
#include "moejet/data/superclasses.h"

namespace moejet::cli {

namespace {

struct SuperclassArgs {
  std::string confusion, out = "superclasses.json";
  int64_t experts = 10;
  uint64_t seed = 0;
  bool random = false;
};

}  // namespace

Runner add_superclasses_command(CLI::App& app) {
  auto a = std::make_shared<SuperclassArgs>();
  auto* sub = app.add_subcommand(
      "superclasses", "group classes into super-classes (one per expert) from a dense model's confusion matrix");
  sub->add_option("--confusion", a->confusion, "confusion matrix from moejet eval --out (confusion.csv or eval.json)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-e,--experts", a->experts, "number of super-classes (= experts)")->capture_default_str();
  sub->add_option("--seed", a->seed, "METIS seed")->capture_default_str();
  sub->add_flag("--random", a->random, "balanced random super-classes instead (the paper's baseline)");
  sub->add_option("-o,--out", a->out, "super-class file (JSON)")->capture_default_str();
  return [a]() {
    std::vector<std::string> names;
    auto cm = data::read_confusion(a->confusion, &names);
    const int64_t K = cm.size(0);
    auto sc = a->random ? data::random_superclasses(K, a->experts, a->seed)
                        : data::superclasses_from_confusion(cm, a->experts, a->seed);
    sc.class_names = names;
    sc.validate(a->out, K);
    // How much of the confusion the division keeps inside super-classes (higher is better).
    auto off = cm.clone();
    off.fill_diagonal_(0.0);
    const double total = off.sum().item<double>();
    auto same = torch::tensor(sc.superclass_of, torch::kLong);
    auto inside = (off * same.unsqueeze(0).eq(same.unsqueeze(1))).sum().item<double>();
    auto j = sc.to_json();
    j["confusion_inside"] = total > 0 ? inside / total : 0.0;
    write_json_file(a->out, j);
    for (int64_t s = 0; s < sc.num_superclasses; ++s) {
      fmt::print("super-class {}: {}\n", s, j["groups"][s].dump());
    }
    fmt::print("{:.1f}% of the off-diagonal confusion falls inside super-classes -> {}\n",
               100.0 * j["confusion_inside"].get<double>(), a->out);
    return 0;
  };
}

}  // namespace moejet::cli
