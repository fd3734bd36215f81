// BenchReport printing/JSON and timing helpers.
#include "bench.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <system_error>

#include "base/clock.h"

namespace pagewise::bench {

std::vector<Bench>& Benches() {
  static std::vector<Bench>* benches = new std::vector<Bench>();
  return *benches;
}

void BenchReport::Print() const {
  std::printf("%-16s %-18s %14s %-6s  %-16s %14s %9s\n", "subject", "metric", "value", "unit",
              "baseline", "baseline_value", "ratio");
  for (const BenchRow& r : rows_) {
    double ratio = r.baseline_value != 0 ? r.value / r.baseline_value : 0;
    std::printf("%-16s %-18s %14.4f %-6s  %-16s %14.4f %9.3f\n", r.subject.c_str(),
                r.metric.c_str(), r.value, r.unit.c_str(), r.baseline.c_str(), r.baseline_value,
                ratio);
  }
  std::fflush(stdout);
}

Status BenchReport::WriteJson(const std::string& path) const {
  nlohmann::json rows = nlohmann::json::array();
  for (const BenchRow& r : rows_) {
    rows.push_back({{"subject", r.subject},
                    {"metric", r.metric},
                    {"value", r.value},
                    {"unit", r.unit},
                    {"baseline", r.baseline},
                    {"baseline_value", r.baseline_value}});
  }
  if (path == "-") {
    std::cout << rows.dump(2) << std::endl;
    return Status::Ok();
  }
  std::ofstream out(path);
  out << rows.dump(2) << "\n";
  out.close();
  if (!out) return Status::IoError("cannot write benchmark JSON to " + path);
  return Status::Ok();
}

Status AnonMapping::Map(size_t len, bool small_pages, bool warm) {
  MapOptions o;
  if (small_pages) o.huge_pages = HugePages::kNever;
  Result<MemoryMapping> m = MemoryMapping::Anonymous(len, o);
  if (!m.ok()) {
    return m.status().WithContext("benchmark memory of " + std::to_string(len >> 20) +
                                  " MiB (lower --scale)");
  }
  m_ = std::move(*m);
  if (warm) WarmUp(m_.data(), m_.size());
  return Status::Ok();
}

BenchTempDir::~BenchTempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

Status BenchTempDir::Create(const std::string& what) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[20];
    std::snprintf(suffix, sizeof(suffix), "%08x%08x", rd(), rd());
    const std::string p = parent + "/pagewise-bench-" + what + "-" + suffix;
    std::error_code ec;
    if (std::filesystem::create_directory(p, ec)) {
      path_ = p;
      return Status::Ok();
    }
    if (ec && ec != std::errc::file_exists) {
      return ErrnoStatus(ec.value(), "creating benchmark directory " + p,
                         "set TMPDIR to a writable directory");
    }
  }
  return Status::IoError("could not create a benchmark directory under " + parent);
}

uint64_t NowNs() {
  return ::pagewise::NowNs();
}  // (bench.h is also the CLI's: no src/ header there)

void WarmUp(void* p, size_t len) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t off = 0; off < len; off += page) c[off] = c[off] + 1;
}

double Median(std::vector<double> s) { return Percentile(std::move(s), 0.5); }

double Percentile(std::vector<double> s, double q) {
  if (s.empty()) return 0;
  std::sort(s.begin(), s.end());
  size_t idx = static_cast<size_t>(q * static_cast<double>(s.size() - 1) + 0.5);
  return s[std::min(idx, s.size() - 1)];
}

void Progress(const BenchOptions& opts, const std::string& line) {
  if (opts.quiet || !IsTerminal(STDERR_FILENO)) return;
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
}

}  // namespace pagewise::bench
