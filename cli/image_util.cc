// Helpers shared by the image commands.
#include "image_util.h"

#include <time.h>

#include <cstdio>

#include "command.h"

namespace pagewise::cli {
namespace {
uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

ProgressLine::ProgressLine(std::string label)
    : label_(std::move(label)), enabled_(StderrIsTerminal()) {}

ProgressLine::~ProgressLine() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
}

void ProgressLine::Update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  if (done > total) done = total;  // totals may be estimates
  const uint64_t now = NowNs();
  if (drawn_ && now - last_ns_ < 100000000ull && done < total) return;
  last_ns_ = now;
  drawn_ = true;
  const double pct =
      total == 0 ? 100.0 : 100.0 * static_cast<double>(done) / static_cast<double>(total);
  std::fprintf(stderr, "\r\033[K%s: %5.1f%% (%s of %s)", label_.c_str(), pct,
               HumanBytes(done).c_str(), HumanBytes(total).c_str());
  std::fflush(stderr);
}

ProgressFn ProgressLine::Fn() {
  return [this](uint64_t done, uint64_t total) { Update(done, total); };
}

std::string HumanBytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  }
  return buf;
}

std::string HexAddr(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string_view RegionKindName(RegionKind k) {
  switch (k) {
    case RegionKind::kAnonymous:
      return "anonymous";
    case RegionKind::kShared:
      return "shared";
    case RegionKind::kFile:
      return "file";
    case RegionKind::kFlat:
      return "flat";
  }
  return "unknown";
}

nlohmann::json StatsJson(const ImageStats& s) {
  return {{"pages", s.pages},
          {"zero_pages", s.zero_pages},
          {"duplicate_pages", s.duplicate_pages},
          {"stored_pages", s.stored_pages},
          {"raw_bytes", s.raw_bytes},
          {"compressed_bytes", s.compressed_bytes},
          {"file_bytes", s.file_bytes}};
}

}  // namespace pagewise::cli
