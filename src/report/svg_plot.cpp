#include "moejet/report/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

namespace moejet::report {

std::string palette(size_t i) {
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return colours[i % (sizeof(colours) / sizeof(colours[0]))];
}

namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Ticks at 1, 2 or 5 times a power of ten, about `count` of them over [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int count) {
  const double span = std::max(hi - lo, 1e-12);
  const double raw = span / std::max(count, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

std::string tick_label(double v) {
  if (std::abs(v) >= 1000)
    return fmt::format("{:.0f}", v);
  if (std::abs(v - std::round(v)) < 1e-9)
    return fmt::format("{:.0f}", v);
  return fmt::format("{:g}", v);
}

struct Frame {
  double x0, x1, y0, y1;  // data range
  int left = 64, right = 180, top = 36, bottom = 48, width = 0, height = 0;
  double px(double x) const {
    return left + (x - x0) / (x1 - x0) * (width - left - right);
  }
  double py(double y) const {
    return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom);
  }
};

// The right margin holds the legend: as wide as its longest name (about 7 px a character at
// 12 px sans-serif), the figure growing by what the default does not hold.
void fit_legend(Frame& f, const std::vector<Series>& series) {
  size_t chars = 0;
  for (const auto& s : series) {
    chars = std::max(chars, s.name.size());
  }
  const int needed = 44 + static_cast<int>(7 * chars);
  if (needed > f.right) {
    f.width += needed - f.right;
    f.right = needed;
  }
  const int rows = 24 + 18 * static_cast<int>(series.size());
  if (f.top + rows > f.height - f.bottom) {
    f.height = f.top + rows + f.bottom;
  }
}

std::string svg_open(int width, int height) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, height, width, height);
}

// The frame's title, grid, ticks and axis labels, without the enclosing <svg> element.
// `integer_x`: x ticks only at whole numbers (bars stand at indices).
std::string axes_body(const Frame& f, const PlotOptions& o, bool x_ticks, bool integer_x = false) {
  std::string s =
      fmt::format("<text x=\"{}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n", f.left, escape(o.title));
  for (double t : nice_ticks(f.y0, f.y1, 6)) {
    s += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", f.px(f.x0),
                     f.px(f.x1), f.py(t), f.py(t));
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", f.left - 6.0, f.py(t) + 4,
                     tick_label(t));
  }
  if (x_ticks) {
    for (double t : nice_ticks(f.x0, f.x1, 8)) {
      if (integer_x && std::abs(t - std::round(t)) > 1e-9) {
        continue;
      }
      s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", f.px(t),
                       f.height - f.bottom + 16.0, tick_label(t));
    }
  }
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", f.left,
                   f.top, f.width - f.left - f.right, f.height - f.top - f.bottom);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (f.left + f.width - f.right) / 2.0,
                   f.height - 10, escape(o.x_label));
  s += fmt::format("<text transform=\"translate(16,{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   (f.top + f.height - f.bottom) / 2.0, escape(o.y_label));
  return s;
}

std::string legend(const Frame& f, const std::vector<Series>& series) {
  std::string s;
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = f.top + 10 + 18.0 * static_cast<double>(i);
    const double x = f.width - f.right + 12;
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"4\" fill=\"{}\"/>\n", x, y - 4, palette(i));
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", x + 20, y, escape(series[i].name));
  }
  return s;
}

}  // namespace

std::string line_plot_svg(const std::vector<Series>& series, const PlotOptions& o) {
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min({y0, s.y[i], i < s.lo.size() ? s.lo[i] : s.y[i]});
      y1 = std::max({y1, s.y[i], i < s.hi.size() ? s.hi[i] : s.y[i]});
    }
  }
  if (x0 > x1) {  // no data
    x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  }
  if (x1 - x0 < 1e-12)
    x1 = x0 + 1;
  const double pad = std::max((y1 - y0) * 0.05, 1e-6);
  Frame f{x0, x1, y0 - pad, y1 + pad};
  f.width = o.width;
  f.height = o.height;
  fit_legend(f, series);
  std::string s = svg_open(f.width, f.height) + axes_body(f, o, true);
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& sr = series[k];
    const size_t n = std::min(sr.x.size(), sr.y.size());
    if (sr.lo.size() >= n && sr.hi.size() >= n && n > 0) {
      std::string band;
      for (size_t i = 0; i < n; ++i) {
        band += fmt::format("{:.1f},{:.1f} ", f.px(sr.x[i]), f.py(sr.hi[i]));
      }
      for (size_t i = n; i-- > 0;) {
        band += fmt::format("{:.1f},{:.1f} ", f.px(sr.x[i]), f.py(sr.lo[i]));
      }
      s +=
          fmt::format("<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"0.15\" stroke=\"none\"/>\n", band, palette(k));
    }
    std::string pts;
    for (size_t i = 0; i < n; ++i) {
      pts += fmt::format("{:.1f},{:.1f} ", f.px(sr.x[i]), f.py(sr.y[i]));
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>\n", f.px(sr.x[i]), f.py(sr.y[i]),
                       palette(k));
    }
    s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", pts, palette(k));
  }
  s += legend(f, series);
  return s + "</svg>\n";
}

namespace {

// One bar chart's frame and marks (no <svg> element): bars at their series' x (the index where a
// series has no x), side by side where several series have a bar at one x.
std::pair<Frame, std::string> bar_chart(const std::vector<Series>& series, const PlotOptions& o) {
  auto x_of = [](const Series& s, size_t i) { return s.x.size() == s.y.size() ? s.x[i] : static_cast<double>(i); };
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y1 = 0;
  std::map<double, std::vector<size_t>> at;  // x -> the series with a bar there, in order
  for (size_t k = 0; k < series.size(); ++k) {
    for (size_t i = 0; i < series[k].y.size(); ++i) {
      const double x = x_of(series[k], i);
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y1 = std::max(y1, series[k].y[i]);
      at[x].push_back(k);
    }
  }
  if (x0 > x1) {
    x0 = 0, x1 = 0;
  }
  size_t lanes = 1;
  for (const auto& [x, ks] : at) {
    lanes = std::max(lanes, ks.size());
  }
  Frame f{x0 - 0.5, x1 + 0.5, 0.0, y1 > 0 ? y1 * 1.08 : 1.0};
  f.width = o.width;
  f.height = o.height;
  fit_legend(f, series);
  std::string s = axes_body(f, o, x1 - x0 < 40, true);
  const double unit = f.px(1) - f.px(0);
  const double lane = unit * 0.8 / static_cast<double>(lanes);
  for (size_t k = 0; k < series.size(); ++k) {
    for (size_t i = 0; i < series[k].y.size(); ++i) {
      const double xv = x_of(series[k], i);
      const auto& ks = at[xv];
      const auto rank = static_cast<double>(std::find(ks.begin(), ks.end(), k) - ks.begin());
      const double x = f.px(xv) - unit * 0.4 + lane * rank;
      const double top = f.py(series[k].y[i]);
      s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n", x, top,
                       std::max(lane - 0.5, 0.5), f.py(0) - top, palette(k));
    }
  }
  s += legend(f, series);
  return {f, s};
}

}  // namespace

std::string bar_plot_svg(const std::vector<Series>& series, const PlotOptions& o) {
  auto [f, body] = bar_chart(series, o);
  return svg_open(f.width, f.height) + body + "</svg>\n";
}

std::string bar_panels_svg(const std::vector<BarPanel>& panels, const PlotOptions& o) {
  std::vector<std::pair<Frame, std::string>> charts;
  int width = 0, height = 0;
  for (const auto& p : panels) {
    PlotOptions po = o;
    po.title = p.title;
    charts.push_back(bar_chart(p.series, po));
    width = std::max(width, charts.back().first.width);
    height += charts.back().first.height;
  }
  if (charts.empty()) {  // still a drawable figure
    charts.push_back(bar_chart({}, o));
    width = charts.back().first.width;
    height = charts.back().first.height;
  }
  std::string s = svg_open(width, height);
  int y = 0;
  for (const auto& [f, body] : charts) {
    s += fmt::format("<g transform=\"translate(0,{})\">\n{}</g>\n", y, body);
    y += f.height;
  }
  return s + "</svg>\n";
}

}  // namespace moejet::report
