// ProgressBar implementation.
#include "progress.h"

#include <cstdio>
#include <ctime>

#include "command.h"

namespace pagewise::cli {
namespace {
uint64_t Now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

ProgressBar::ProgressBar(std::string label, uint64_t total, bool unit_bytes)
    : label_(std::move(label)),
      total_(total),
      unit_bytes_(unit_bytes),
      enabled_(StderrIsTerminal()),
      start_ns_(Now()) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Update(uint64_t done) {
  if (!enabled_) return;
  Draw(done, false);
}

void ProgressBar::Draw(uint64_t done, bool force) {
  const uint64_t now = Now();
  uint64_t last = last_draw_ns_.load(std::memory_order_relaxed);
  if (!force && now - last < 100000000ull) return;
  if (!last_draw_ns_.compare_exchange_strong(last, now) && !force) return;
  std::lock_guard<std::mutex> lock(draw_mu_);
  if (finished_) return;
  const uint64_t total = total_.load(std::memory_order_relaxed);
  const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
  constexpr int kWidth = 30;
  int filled = static_cast<int>(frac * kWidth);
  if (filled > kWidth) filled = kWidth;
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
  bar[kWidth] = 0;
  const double secs = static_cast<double>(now - start_ns_) / 1e9;
  if (unit_bytes_) {
    const double mib = static_cast<double>(done) / (1 << 20);
    std::fprintf(stderr, "\r\033[K%s [%s] %5.1f%% %8.1f/%.1f MiB %7.1f MiB/s", label_.c_str(), bar,
                 frac * 100, mib, static_cast<double>(total) / (1 << 20),
                 secs > 0 ? mib / secs : 0.0);
  } else {
    std::fprintf(stderr, "\r\033[K%s [%s] %5.1f%% %llu/%llu", label_.c_str(), bar, frac * 100,
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
  }
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(draw_mu_);
  if (finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

}  // namespace pagewise::cli
