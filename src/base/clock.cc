// Timeout conversions (base/clock.h).
#include "base/clock.h"

#include <algorithm>
#include <climits>
#include <string>

namespace pagewise {

int PollTimeoutMs(Duration timeout) {
  if (IsUnlimited(timeout)) return -1;
  if (timeout <= Duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

std::chrono::steady_clock::time_point DeadlineAfter(Duration timeout) {
  const auto now = std::chrono::steady_clock::now();
  if (IsUnlimited(timeout)) return std::chrono::steady_clock::time_point::max();
  if (timeout <= Duration::zero()) return now;
  return now + timeout;
}

std::string DurationText(Duration timeout) {
  if (IsUnlimited(timeout)) return "no limit";
  const int64_t ns = timeout.count();
  if (ns % 1000000000 == 0) return std::to_string(ns / 1000000000) + " s";
  if (ns % 1000000 == 0) return std::to_string(ns / 1000000) + " ms";
  if (ns % 1000 == 0) return std::to_string(ns / 1000) + " us";
  return std::to_string(ns) + " ns";
}

}  // namespace pagewise
