// SVG plot writers.
#include "svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace pagewise::bench {
namespace {

constexpr int kW = 800, kH = 420, kLeft = 70, kRight = 20, kTop = 40, kBottom = 60;
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

std::string Fmt(double v) {
  char b[32];
  if (v != 0 && (std::fabs(v) >= 1e5 || std::fabs(v) < 1e-2))
    std::snprintf(b, sizeof b, "%.1e", v);
  else
    std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

void Header(std::ostringstream& o, const std::string& title) {
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << kW << "' height='" << kH
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' "
       "fill='white'/>\n"
    << "<text x='" << kW / 2 << "' y='22' text-anchor='middle' font-size='15'>" << Esc(title)
    << "</text>\n"
    << "<line x1='" << kLeft << "' y1='" << kH - kBottom << "' x2='" << kW - kRight << "' y2='"
    << kH - kBottom << "' stroke='black'/>\n<line x1='" << kLeft << "' y1='" << kTop << "' x2='"
    << kLeft << "' y2='" << kH - kBottom << "' stroke='black'/>\n";
}

void Legend(std::ostringstream& o, const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    int y = kTop + 8 + static_cast<int>(i) * 16;
    o << "<rect x='" << kW - kRight - 150 << "' y='" << y - 9 << "' width='10' height='10' fill='"
      << kColors[i % 6] << "'/><text x='" << kW - kRight - 135 << "' y='" << y << "'>"
      << Esc(names[i]) << "</text>\n";
  }
}

// Creates the plot's directory when missing (`--svg DIR` names a directory to
// fill, as --json names a file to write), so that a run never measures for
// minutes and then fails at its last step.
Status Save(const std::string& path, const std::ostringstream& o) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::IoError("cannot create the SVG directory " + dir.string() + ": " + ec.message() +
                           " (pass --svg a directory you can write)");
  }
  std::ofstream f(path);
  f << o.str() << "</svg>\n";
  f.close();
  if (!f) return Status::IoError("cannot write SVG plot to " + path);
  return Status::Ok();
}

}  // namespace

Status WriteSvgHistogram(const std::string& path, const std::string& title, const std::string& unit,
                         const std::vector<std::pair<std::string, std::vector<double>>>& sets) {
  double lo = 1e300, hi = 0;
  for (const auto& [name, s] : sets) {
    for (double v : s) {
      if (v > 0) lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (hi <= 0) return Status::InvalidArgument("histogram '" + title + "' has no positive samples");
  int b0 = static_cast<int>(std::floor(std::log2(lo))),
      b1 = static_cast<int>(std::ceil(std::log2(hi)));
  if (b1 <= b0) b1 = b0 + 1;
  const int nb = b1 - b0;
  std::vector<std::vector<double>> frac(sets.size(), std::vector<double>(nb, 0));
  double maxf = 0;
  for (size_t k = 0; k < sets.size(); ++k) {
    for (double v : sets[k].second) {
      int b = v > 0 ? static_cast<int>(std::floor(std::log2(v))) - b0 : 0;
      frac[k][std::clamp(b, 0, nb - 1)] += 1.0;
    }
    for (double& f : frac[k]) {
      f /= std::max<size_t>(1, sets[k].second.size());
      maxf = std::max(maxf, f);
    }
  }
  std::ostringstream o;
  Header(o, title);
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  const double gw = pw / nb, bw = gw * 0.8 / static_cast<double>(sets.size());
  for (int b = 0; b < nb; ++b) {
    for (size_t k = 0; k < sets.size(); ++k) {
      double h = maxf > 0 ? frac[k][b] / maxf * ph : 0;
      o << "<rect x='" << kLeft + b * gw + gw * 0.1 + k * bw << "' y='" << kH - kBottom - h
        << "' width='" << bw << "' height='" << h << "' fill='" << kColors[k % 6] << "'/>\n";
    }
    if (nb <= 24 || b % 2 == 0) {
      o << "<text x='" << kLeft + b * gw + gw / 2 << "' y='" << kH - kBottom + 15
        << "' text-anchor='middle' font-size='10'>" << Fmt(std::ldexp(1.0, b0 + b)) << "</text>\n";
    }
  }
  o << "<text x='" << kW / 2 << "' y='" << kH - 15 << "' text-anchor='middle'>" << Esc(unit)
    << " (log2 buckets, lower edge)</text>\n<text x='15' y='" << kH / 2
    << "' transform='rotate(-90 15 " << kH / 2
    << ")' text-anchor='middle'>fraction of samples</text>\n";
  std::vector<std::string> names;
  for (const auto& s : sets) names.push_back(s.first);
  Legend(o, names);
  return Save(path, o);
}

Status WriteSvgLines(const std::string& path, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel, const std::vector<Series>& series) {
  double xmax = 0, ymax = 0;
  for (const Series& s : series) {
    for (double x : s.x) xmax = std::max(xmax, x);
    for (double y : s.y) ymax = std::max(ymax, y);
  }
  if (xmax <= 0 || ymax <= 0) return Status::InvalidArgument("plot '" + title + "' has no data");
  std::ostringstream o;
  Header(o, title);
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  for (size_t k = 0; k < series.size(); ++k) {
    o << "<polyline fill='none' stroke-width='2' stroke='" << kColors[k % 6] << "' points='";
    for (size_t i = 0; i < series[k].x.size() && i < series[k].y.size(); ++i) {
      o << kLeft + series[k].x[i] / xmax * pw << "," << kH - kBottom - series[k].y[i] / ymax * ph
        << " ";
    }
    o << "'/>\n";
  }
  for (int t = 0; t <= 4; ++t) {
    o << "<text x='" << kLeft + t * pw / 4 << "' y='" << kH - kBottom + 15
      << "' text-anchor='middle' font-size='10'>" << Fmt(xmax * t / 4) << "</text>\n<text x='"
      << kLeft - 5 << "' y='" << kH - kBottom - t * ph / 4 + 4
      << "' text-anchor='end' font-size='10'>" << Fmt(ymax * t / 4) << "</text>\n";
  }
  o << "<text x='" << kW / 2 << "' y='" << kH - 15 << "' text-anchor='middle'>" << Esc(xlabel)
    << "</text>\n<text x='15' y='" << kH / 2 << "' transform='rotate(-90 15 " << kH / 2
    << ")' text-anchor='middle'>" << Esc(ylabel) << "</text>\n";
  std::vector<std::string> names;
  for (const Series& s : series) names.push_back(s.name);
  Legend(o, names);
  return Save(path, o);
}

Status WriteSvgScatterLogY(const std::string& path, const std::string& title,
                           const std::string& xlabel, const std::string& ylabel,
                           const std::vector<Series>& series, size_t max_points) {
  double xmax = 0, ylo = 1e300, yhi = 0;
  for (const Series& s : series) {
    for (double x : s.x) xmax = std::max(xmax, x);
    for (double y : s.y) {
      if (y > 0) ylo = std::min(ylo, y);
      yhi = std::max(yhi, y);
    }
  }
  if (xmax <= 0 || yhi <= 0) return Status::InvalidArgument("plot '" + title + "' has no data");
  const double l0 = std::floor(std::log10(ylo)), l1 = std::max(l0 + 1, std::ceil(std::log10(yhi)));
  std::ostringstream o;
  Header(o, title);
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    const size_t n = std::min(s.x.size(), s.y.size());
    const size_t step = std::max<size_t>(1, n / std::max<size_t>(1, max_points));
    for (size_t i = 0; i < n; i += step) {
      const double y = std::max(s.y[i], ylo);
      o << "<circle r='1.5' fill='" << kColors[k % 6] << "' cx='" << kLeft + s.x[i] / xmax * pw
        << "' cy='" << kH - kBottom - (std::log10(y) - l0) / (l1 - l0) * ph << "'/>\n";
    }
  }
  for (int t = 0; t <= 4; ++t) {
    o << "<text x='" << kLeft + t * pw / 4 << "' y='" << kH - kBottom + 15
      << "' text-anchor='middle' font-size='10'>" << Fmt(xmax * t / 4) << "</text>\n";
  }
  for (double l = l0; l <= l1; l += 1) {
    o << "<text x='" << kLeft - 5 << "' y='" << kH - kBottom - (l - l0) / (l1 - l0) * ph + 4
      << "' text-anchor='end' font-size='10'>" << Fmt(std::pow(10.0, l)) << "</text>\n";
  }
  o << "<text x='" << kW / 2 << "' y='" << kH - 15 << "' text-anchor='middle'>" << Esc(xlabel)
    << "</text>\n<text x='15' y='" << kH / 2 << "' transform='rotate(-90 15 " << kH / 2
    << ")' text-anchor='middle'>" << Esc(ylabel) << " (log scale)</text>\n";
  std::vector<std::string> names;
  for (const Series& s : series) names.push_back(s.name);
  Legend(o, names);
  return Save(path, o);
}

}  // namespace pagewise::bench
