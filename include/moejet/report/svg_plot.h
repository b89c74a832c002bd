#pragma once
// Small, dependency-free SVG charts for the run reports: a line plot (accuracy vs step, one line
// per run, with an optional band) and grouped bars (per-expert load), alone or stacked in panels.
// Axes get "nice" ticks and fit the data; the legend sits right of the plot, which is widened to
// hold its longest name; colours follow a fixed palette so a run keeps its colour across the line
// charts of one report.

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

/// One bar per value of each series, at the series' x (its index where x is empty); series with a
/// bar at the same x stand side by side.
std::string bar_plot_svg(const std::vector<Series>& series, const PlotOptions& options);

/// One bar chart of a figure made of several stacked charts.
struct BarPanel {
  std::string title;
  std::vector<Series> series;
};

/// Bar charts stacked top to bottom in one figure, each with its own title, axes and legend
/// (options' title is used only when there are no panels).
std::string bar_panels_svg(const std::vector<BarPanel>& panels, const PlotOptions& options);

/// Colour i of the palette (cycles).
std::string palette(size_t i);

}  // namespace moejet::report
