#include "moejet/data/superclasses.h"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include <torch/torch.h>

#include "moejet/core/error.h"
#include "moejet/core/fs.h"
#include "moejet/graph/partition.h"

namespace moejet::data {

torch::Tensor SuperClasses::matrix() const {
  auto m = torch::zeros({num_classes(), num_superclasses});
  for (int64_t c = 0; c < num_classes(); ++c) {
    m[c][superclass_of[c]] = 1.0;
  }
  return m;
}

torch::Tensor SuperClasses::map(const torch::Tensor& labels) const {
  auto table = torch::tensor(superclass_of, torch::kLong).to(labels.device());
  return table.index_select(0, labels.reshape({-1})).view(labels.sizes());
}

void SuperClasses::validate(const std::string& source, int64_t expected_classes) const {
  check<ConfigError>(num_superclasses >= 1, "{}: num_superclasses must be >= 1, got {}", source, num_superclasses);
  check<ConfigError>(!superclass_of.empty(), "{}: superclass_of is empty", source);
  check<ConfigError>(expected_classes <= 0 || num_classes() == expected_classes,
                     "{}: superclass_of has {} classes but the model/data set has {}", source, num_classes(),
                     expected_classes);
  std::vector<int64_t> size(num_superclasses, 0);
  for (int64_t c = 0; c < num_classes(); ++c) {
    const int64_t s = superclass_of[c];
    check<ConfigError>(s >= 0 && s < num_superclasses, "{}: class {} has super-class {}, outside 0..{}", source, c, s,
                       num_superclasses - 1);
    size[s]++;
  }
  for (int64_t s = 0; s < num_superclasses; ++s) {
    check<ConfigError>(size[s] > 0, "{}: super-class {} has no classes", source, s);
  }
  check<ConfigError>(class_names.empty() || static_cast<int64_t>(class_names.size()) == num_classes(),
                     "{}: {} class names for {} classes", source, class_names.size(), num_classes());
}

std::vector<std::vector<int64_t>> SuperClasses::members() const {
  std::vector<std::vector<int64_t>> m(static_cast<size_t>(std::max<int64_t>(num_superclasses, 0)));
  for (int64_t c = 0; c < num_classes(); ++c) {
    const int64_t s = superclass_of[c];
    if (s >= 0 && s < num_superclasses) {
      m[static_cast<size_t>(s)].push_back(c);
    }
  }
  return m;
}

json SuperClasses::to_json() const {
  json groups = json::array();
  for (const auto& classes : members()) {
    json g = json::array();
    for (int64_t c : classes) {
      g.push_back(class_names.empty() ? json(c) : json(class_names[c]));
    }
    groups.push_back(g);
  }
  json j = {{"num_superclasses", num_superclasses}, {"superclass_of", superclass_of}, {"groups", groups}};
  if (!class_names.empty()) {
    j["class_names"] = class_names;
  }
  return j;
}

SuperClasses superclasses_from_json(const json& j, const std::string& source) {
  check<ConfigError>(j.is_object(), "{}: expected a JSON object", source);
  check_known_keys(j, {"num_superclasses", "superclass_of", "class_names", "groups", "confusion_inside"}, source);
  SuperClasses s;
  check<ConfigError>(j.contains("superclass_of"), "{}: missing 'superclass_of'", source);
  try {
    s.superclass_of = j.at("superclass_of").get<std::vector<int64_t>>();
    if (j.contains("class_names")) {
      s.class_names = j.at("class_names").get<std::vector<std::string>>();
    }
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: {}", source, e.what()));
  }
  if (j.contains("num_superclasses")) {
    check<ConfigError>(j.at("num_superclasses").is_number_integer(),
                       "{}: 'num_superclasses' must be an integer, got {}", source,
                       j.at("num_superclasses").type_name());
    s.num_superclasses = j.at("num_superclasses").get<int64_t>();
  } else if (!s.superclass_of.empty()) {
    s.num_superclasses = *std::max_element(s.superclass_of.begin(), s.superclass_of.end()) + 1;
  }
  return s;
}

SuperClasses read_superclasses(const std::string& path, int64_t expected_classes) {
  auto s = superclasses_from_json(read_json_file(path), path);
  s.validate(path, expected_classes);
  return s;
}

SuperClasses random_superclasses(int64_t num_classes, int64_t num_superclasses, uint64_t seed) {
  check<ConfigError>(num_superclasses >= 1 && num_superclasses <= num_classes,
                     "cannot split {} classes into {} super-classes", num_classes, num_superclasses);
  std::vector<int64_t> order(num_classes);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ULL + 17);
  std::shuffle(order.begin(), order.end(), rng);
  SuperClasses s;
  s.num_superclasses = num_superclasses;
  s.superclass_of.assign(num_classes, 0);
  for (int64_t i = 0; i < num_classes; ++i) {
    s.superclass_of[order[i]] = i % num_superclasses;
  }
  return s;
}

SuperClasses superclasses_from_confusion(const torch::Tensor& confusion, int64_t num_superclasses, uint64_t seed) {
  check<ConfigError>(confusion.dim() == 2 && confusion.size(0) == confusion.size(1),
                     "confusion matrix must be square, got [{}]",
                     fmt::join(confusion.sizes().begin(), confusion.sizes().end(), ", "));
  const int64_t K = confusion.size(0);
  check<ConfigError>(num_superclasses >= 1 && num_superclasses <= K, "cannot split {} classes into {} super-classes", K,
                     num_superclasses);
  auto c = confusion.to(torch::kDouble);
  auto rates = c / c.sum(1, true).clamp_min(1.0);
  auto graph = rates + rates.t();
  graph.fill_diagonal_(0.0);
  SuperClasses s;
  s.num_superclasses = num_superclasses;
  s.superclass_of = graph::partition_graph(graph, num_superclasses, seed);
  // METIS may leave a part empty on tiny graphs; move the least attached class of the largest
  // part there, so that every expert has a super-class.
  std::vector<int64_t> size(num_superclasses, 0);
  for (auto p : s.superclass_of)
    size[p]++;
  for (int64_t e = 0; e < num_superclasses; ++e) {
    if (size[e] > 0)
      continue;
    const int64_t big = std::max_element(size.begin(), size.end()) - size.begin();
    int64_t pick = -1;
    double least = 0;
    for (int64_t k = 0; k < K; ++k) {
      if (s.superclass_of[k] != big)
        continue;
      double tie = 0;
      for (int64_t j = 0; j < K; ++j) {
        if (j != k && s.superclass_of[j] == big)
          tie += graph[k][j].item<double>();
      }
      if (pick < 0 || tie < least) {
        pick = k;
        least = tie;
      }
    }
    s.superclass_of[pick] = e;
    size[big]--;
    size[e]++;
  }
  return s;
}

namespace {

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char ch : line) {
    if (ch == '"') {
      quoted = !quoted;
    } else if (ch == ',' && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else if (ch != '\r') {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

torch::Tensor read_confusion(const std::string& path, std::vector<std::string>* class_names) {
  check<DataError>(file_exists(path), "{}: no such file", path);
  if (path.size() >= 5 && path.substr(path.size() - 5) == ".json") {
    auto j = read_json_file(path);
    check<DataError>(j.contains("confusion"), "{}: no 'confusion' matrix (expected moejet eval's eval.json)", path);
    std::vector<std::vector<double>> rows;
    try {
      rows = j.at("confusion").get<std::vector<std::vector<double>>>();
      if (class_names && j.contains("class_names")) {
        *class_names = j.at("class_names").get<std::vector<std::string>>();
      }
    } catch (const json::exception& e) {
      throw DataError(
          fmt::format("{}: 'confusion' must be rows of numbers and 'class_names' strings: {}", path, e.what()));
    }
    const int64_t K = static_cast<int64_t>(rows.size());
    auto m = torch::zeros({K, K}, torch::kDouble);
    for (int64_t r = 0; r < K; ++r) {
      check<DataError>(static_cast<int64_t>(rows[r].size()) == K, "{}: confusion row {} has {} values, expected {}",
                       path, r, rows[r].size(), K);
      for (int64_t c = 0; c < K; ++c)
        m[r][c] = rows[r][c];
    }
    return m;
  }
  std::ifstream in(path);
  std::string line;
  check<DataError>(static_cast<bool>(std::getline(in, line)), "{}: empty file", path);
  auto header = split_csv_line(line);
  const int64_t K = static_cast<int64_t>(header.size()) - 1;
  check<DataError>(K >= 1, "{}: the header names no classes", path);
  auto m = torch::zeros({K, K}, torch::kDouble);
  int64_t r = 0;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    auto cells = split_csv_line(line);
    check<DataError>(static_cast<int64_t>(cells.size()) == K + 1, "{}: line {} has {} cells, expected {}", path, r + 2,
                     cells.size(), K + 1);
    check<DataError>(r < K, "{}: more than {} rows", path, K);
    for (int64_t c = 0; c < K; ++c) {
      try {
        m[r][c] = std::stod(cells[c + 1]);
      } catch (const std::exception&) {
        throw DataError(fmt::format("{}: line {}: '{}' is not a number", path, r + 2, cells[c + 1]));
      }
    }
    ++r;
  }
  check<DataError>(r == K, "{}: {} rows for {} classes", path, r, K);
  if (class_names) {
    *class_names = std::vector<std::string>(header.begin() + 1, header.end());
  }
  return m;
}

}  // namespace moejet::data
