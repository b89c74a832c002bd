#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "moejet/core/fs.h"
#include "moejet/report/run_report.h"
#include "moejet/report/svg_plot.h"
#include "test_util.h"

namespace {

using namespace moejet;

report::RunSummary run_of(const std::string& label, std::vector<double> top1, double loss0) {
  report::RunSummary r;
  r.label = label;
  r.params = 1e6;
  r.flops = 2e8;
  for (size_t i = 0; i < top1.size(); ++i) {
    const int64_t epoch = static_cast<int64_t>(i) - 1;  // the first is the evaluation before training
    r.evals.push_back({10 * static_cast<int64_t>(i), epoch, top1[i], -1.0});
    r.losses.emplace_back(10 * static_cast<int64_t>(i) + 5, loss0 / static_cast<double>(i + 1));
  }
  r.start_top1 = top1.front();
  r.final_top1 = top1.back();
  r.best_top1 = *std::max_element(top1.begin() + 1, top1.end());
  return r;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Report, SeedsOfOneLabelGiveMeanAndSdAndTheStartColumn) {
  moejet::testing::TempDir dir;
  const std::vector<report::RunSummary> runs = {
      run_of("MoE Jetpack (SpheroMoE, recycled from the dense checkpoint)", {50, 70, 80}, 2.0),
      run_of("dense, scratch", {10, 40, 60}, 2.3),
      run_of("MoE Jetpack (SpheroMoE, recycled from the dense checkpoint)", {52, 72, 82}, 2.0),
      run_of("MoE Jetpack (SpheroMoE, recycled from the dense checkpoint)", {54, 74, 84}, 2.0)};
  const auto md = slurp(report::write_report(runs, dir.file("rep"), "t"));
  // final top-1 80, 82, 84: mean 82, sample sd 2; start 50, 52, 54.
  EXPECT_NE(md.find("| MoE Jetpack (SpheroMoE, recycled from the dense checkpoint) | 3 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 52.00 ± 2.00 | 82.00 ± 2.00 | 82.00 ± 2.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| dense, scratch | 1 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| run | start | ep 1 | ep 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("mean ± sample sd over the seeds"), std::string::npos) << md;
  EXPECT_TRUE(file_exists(dir.file("rep/loss.svg")));
  const auto svg = slurp(dir.file("rep/accuracy.svg"));
  EXPECT_NE(svg.find("<polygon"), std::string::npos) << "no sd band";
  EXPECT_NE(svg.find("±1 sd over seeds"), std::string::npos);
}

TEST(Report, LegendsFitInsideTheFigure) {
  // Every legend name must end inside the SVG's width (about 7 px a character at 12 px).
  const std::string name(60, 'x');
  for (const auto& svg :
       {report::line_plot_svg({{name, {0, 1}, {1, 2}, {}, {}}, {"short", {0, 1}, {2, 1}, {}, {}}}, {"t", "x", "y"}),
        report::bar_plot_svg({{name, {0, 1}, {1, 2}, {}, {}}}, {"t", "x", "y"})}) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(svg, m, std::regex("width=\"([0-9]+)\"")));
    const double width = std::stod(m[1]);
    std::regex text("<text x=\"([0-9.]+)\" y=\"[0-9.]+\">(x+)</text>");
    ASSERT_TRUE(std::regex_search(svg, m, text)) << svg;
    EXPECT_LE(std::stod(m[1]) + 7.0 * static_cast<double>(m[2].length()), width) << svg.substr(0, 300);
  }
}

TEST(Report, ExpertLoadSeparatesCoreAndUniversalExpertsAndNamesTheBlock) {
  // A SpheroMoE block with 2 core and 4 universal experts: the core pair takes 60% of the mass
  // (0.4 and 0.2: max/mean 4/3 within the group), the universal four 10% each (even).
  moejet::testing::TempDir dir;
  auto r = run_of("jet", {10, 50}, 2.0);
  r.moe_kind = "sphero";
  r.last_moe_stats = json::parse(R"([{"block": 7, "kind": "sphero", "dispatch_entropy": 1.5,
      "load": [0.4, 0.2, 0.1, 0.1, 0.1, 0.1],
      "groups": [{"name": "core", "first": 0, "experts": 2, "share": 0.6, "load_max_over_mean": 1.3333,
                  "load_min_over_mean": 0.6667, "load_cv": 0.4714},
                 {"name": "universal", "first": 2, "experts": 4, "share": 0.4, "load_max_over_mean": 1.0,
                  "load_min_over_mean": 1.0, "load_cv": 0.0}]}])");
  // A log written before groups existed: one group of all its experts.
  auto old = run_of("soft", {10, 40}, 2.0);
  old.moe_kind = "soft";
  old.last_moe_stats = json::parse(R"([{"block": 3, "kind": "soft", "dispatch_entropy": 2.0,
      "load": [0.5, 0.25, 0.25], "load_max_over_mean": 1.5, "load_min_over_mean": 0.75, "load_cv": 0.433}])");
  const auto md = slurp(report::write_report({r, old}, dir.file("rep"), "t"));
  EXPECT_NE(md.find("| jet | 7 | sphero | core 2 | 60.0% | 1.33 | 0.67 | 0.47 | 1.500 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| jet | 7 | sphero | universal 4 | 40.0% | 1.00 | 1.00 | 0.00 | 1.500 |"), std::string::npos)
      << md;
  EXPECT_NE(md.find("| soft | 3 | soft | experts 3 | 100.0% | 1.50 | 0.75 | 0.43 | 2.000 |"), std::string::npos) << md;
  const auto svg = slurp(dir.file("rep/expert_load.svg"));
  for (const std::string part :
       {"jet: block 7 (sphero)", "core (2 experts, 60.0% of the mass)", "universal (4 experts, 40.0% of the mass)",
        "soft: block 3 (soft)", "experts (3 experts, 100.0% of the mass)"}) {
    EXPECT_NE(svg.find(part), std::string::npos) << part << "\n" << svg.substr(0, 600);
  }
  // Bars: 6 + 3, each height its load over its group's mean; two panels stacked.
  std::regex bar("<rect x=\"[0-9.]+\" y=\"[0-9.]+\" width=\"[0-9.]+\" height=\"([0-9.]+)\" fill=\"#");
  std::vector<double> heights;
  for (std::sregex_iterator it(svg.begin(), svg.end(), bar), end; it != end; ++it) {
    heights.push_back(std::stod((*it)[1]));
  }
  ASSERT_EQ(heights.size(), 6u + 3u + 3u) << "6 + 3 bars and a legend mark per group";
  EXPECT_NE(svg.find("<g transform=\"translate(0,"), std::string::npos);
  // Within the core pair the first is twice the second; the universal four are equal (and a
  // universal expert's bar is as high as the core pair's mean: 1 = an even share in its group).
  EXPECT_NEAR(heights[0] / heights[1], 2.0, 0.02);
  EXPECT_NEAR(heights[2] / heights[3], 1.0, 0.02);
  EXPECT_NEAR((heights[0] + heights[1]) / 2 / heights[2], 1.0, 0.02);
  // Bars stand at expert indices: the x ticks are whole numbers (3 bars had ticks at -0.5, 0.5...).
  std::regex x_tick("text-anchor=\"middle\">(-?[0-9.]+)</text>");
  int ticks = 0;
  for (std::sregex_iterator it(svg.begin(), svg.end(), x_tick), end; it != end; ++it, ++ticks) {
    EXPECT_EQ((*it)[1].str().find('.'), std::string::npos) << (*it)[1];
  }
  EXPECT_GE(ticks, 6);
}

TEST(Report, FiguresRasteriseToPng) {
  // rsvg-convert (Debian: librsvg2-bin, which scripts/setup.sh installs) draws each figure; a
  // malformed SVG makes it fail.
  moejet::testing::TempDir dir;
  const std::vector<report::RunSummary> runs = {run_of("a", {50, 70, 80}, 2.0), run_of("a", {51, 71, 79}, 2.1),
                                                run_of("b", {10, 40, 60}, 2.3)};
  report::write_report(runs, dir.file("rep"), "t");
  for (const std::string fig : {"accuracy", "loss", "expert_load"}) {
    const std::string png = dir.file(fig + ".png");
    const std::string cmd = "rsvg-convert -o " + png + " " + dir.file("rep/" + fig + ".svg") + " 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const auto bytes = slurp(png);
    ASSERT_GT(bytes.size(), 1000u) << fig;
    EXPECT_EQ(bytes.substr(1, 3), "PNG") << fig;
  }
}

}  // namespace
