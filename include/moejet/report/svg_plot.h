#pragma once
// Small, dependency-free SVG charts for the run reports: a line plot (accuracy vs step, one line
// per run, with an optional band) and grouped bars (per-expert load). Axes get "nice" ticks and
// fit the data; the legend sits right of the plot, which is widened to hold its longest name;
// colours follow a fixed palette so a run keeps its colour across the charts of one report.

#include <string>
#include <vector>

namespace moejet::report {

struct Series {
  std::string name;
  std::vector<double> x, y;
  /// Optional band around the line (e.g. mean -/+ one sd over seeds), one value per point.
  std::vector<double> lo, hi;
};

struct PlotOptions {
  std::string title, x_label, y_label;
  int width = 760, height = 440;
};

std::string line_plot_svg(const std::vector<Series>& series, const PlotOptions& options);

/// One bar per value of each series (x = index), series side by side.
std::string bar_plot_svg(const std::vector<Series>& series, const PlotOptions& options);

/// Colour i of the palette (cycles).
std::string palette(size_t i);

}  // namespace moejet::report
