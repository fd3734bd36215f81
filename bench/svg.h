// Minimal SVG plots for benchmark results people would rather see than read:
// latency histograms (log-scale buckets) and timelines (x-y series).
//
// Self-contained (no dependencies); output is a single standalone .svg file.
// Thread safety: pure functions over their arguments.
#ifndef PAGEWISE_BENCH_SVG_H_
#define PAGEWISE_BENCH_SVG_H_

#include <string>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::bench {

struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
};

// Histogram of `samples` (e.g. latencies in us) in log2 buckets, one bar
// group per named sample set, so two distributions compare side by side.
Status WriteSvgHistogram(const std::string& path, const std::string& title, const std::string& unit,
                         const std::vector<std::pair<std::string, std::vector<double>>>& sets);

// Scatter plot of several series with a log-scale y axis (e.g. each fault's
// latency at the time it was read); at most `max_points` points per series
// are drawn (evenly picked), so plots stay small.
Status WriteSvgScatterLogY(const std::string& path, const std::string& title,
                           const std::string& xlabel, const std::string& ylabel,
                           const std::vector<Series>& series, size_t max_points = 20000);

// Line plot of several series (e.g. pages resident over time).
Status WriteSvgLines(const std::string& path, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel, const std::vector<Series>& series);

}  // namespace pagewise::bench

#endif  // PAGEWISE_BENCH_SVG_H_
