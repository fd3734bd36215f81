// Benchmark harness shared by `pagewise bench NAME`.
//
// A benchmark registers itself with a static BenchRegistration and fills a
// BenchReport with rows: each figure beside its baseline measured in the same
// run (the harness prints the ratio). The report prints as a table and, with
// --json FILE, as a JSON list of {"subject", "metric", "value", "unit",
// "baseline", "baseline_value"}.
//
// Timing helpers here use CLOCK_MONOTONIC. Benchmarks must warm memory before
// timing: the first touch of never-used memory in a VM costs several times a
// warm touch (WarmUp() does it).
//
// Thread safety: BenchReport is not thread-safe; fill it from one thread.
#ifndef PAGEWISE_BENCH_BENCH_H_
#define PAGEWISE_BENCH_BENCH_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pagewise/host.h"
#include "pagewise/status.h"

namespace pagewise::bench {

struct BenchRow {
  std::string subject;
  std::string metric;
  double value = 0;
  std::string unit;
  std::string baseline;
  double baseline_value = 0;
};

class BenchReport {
 public:
  void Add(BenchRow row) { rows_.push_back(std::move(row)); }
  const std::vector<BenchRow>& rows() const { return rows_; }
  // Table on stdout: subject, metric, value, baseline, baseline value, ratio.
  void Print() const;
  // Writes the rows as a JSON array to `path` ("-" for stdout).
  Status WriteJson(const std::string& path) const;

 private:
  std::vector<BenchRow> rows_;
};

struct BenchOptions {
  std::string json_path;  // empty: no JSON
  double scale = 1.0;     // multiplies the default region size (tests use < 1)
  bool quiet = false;     // no progress lines
  std::string svg_dir;    // non-empty: also write plots (histograms, timelines) here
  std::string endpoint;   // bench remote: an S3 endpoint to use instead of its own server
  // bench criu: restore with these subjects only (empty: all). A partial run
  // reports only the rows whose subject and baseline both ran.
  std::vector<std::string> subjects;
};

using BenchFn = std::function<Status(const BenchOptions&, BenchReport*)>;

struct Bench {
  std::string name;
  std::string help;
  BenchFn run;
};

std::vector<Bench>& Benches();

struct BenchRegistration {
  BenchRegistration(std::string name, std::string help, BenchFn run) {
    Benches().push_back({std::move(name), std::move(help), std::move(run)});
  }
};

// An anonymous private mapping (a MemoryMapping, pagewise/host.h: benchmarks
// make no raw system calls), unmapped on destruction.
class AnonMapping {
 public:
  AnonMapping() = default;
  AnonMapping(const AnonMapping&) = delete;
  AnonMapping& operator=(const AnonMapping&) = delete;
  // Maps `len` bytes (a multiple of the page size) read-write, replacing
  // what an earlier Map() mapped; with `small_pages`, MADV_NOHUGEPAGE (exact
  // 4 KiB tracking and copy-on-write whatever the THP mode); with `warm`,
  // touches every page (WarmUp). Errors: the mapping failed (the message
  // says to lower --scale).
  Status Map(size_t len, bool small_pages, bool warm);
  char* data() const { return m_.data(); }
  size_t size() const { return m_.size(); }

 private:
  MemoryMapping m_;
};

// A fresh directory for a benchmark's files ($TMPDIR or /tmp, named
// pagewise-bench-<what>-<random>), removed with its contents on
// destruction. path() is empty if Create() failed.
class BenchTempDir {
 public:
  BenchTempDir() = default;
  BenchTempDir(const BenchTempDir&) = delete;
  BenchTempDir& operator=(const BenchTempDir&) = delete;
  ~BenchTempDir();
  Status Create(const std::string& what);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Monotonic clock in nanoseconds.
uint64_t NowNs();
// Writes one byte per page of [p, p+len) so that it is populated and warm.
void WarmUp(void* p, size_t len);
// Median of samples (copied and sorted).
double Median(std::vector<double> samples);
// Percentile q in [0,1] of samples.
double Percentile(std::vector<double> samples, double q);
// Progress line on stderr when it is a terminal (overwritten in place).
void Progress(const BenchOptions& opts, const std::string& line);

}  // namespace pagewise::bench

#endif  // PAGEWISE_BENCH_BENCH_H_
