// LatencyHistogram implementation: log-linear buckets.
#include "live/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace pagewise::live {

int LatencyHistogram::BucketOf(uint64_t ns) {
  if (ns < kSubBuckets) return static_cast<int>(ns);
  const int msb = 63 - std::countl_zero(ns);  // >= 3
  // The kSubBuckets values below the leading bit select the sub-bucket.
  const int sub = static_cast<int>((ns >> (msb - 3)) & (kSubBuckets - 1));
  return std::min(kBuckets - 1, (msb - 2) * kSubBuckets + sub);
}

uint64_t LatencyHistogram::BucketUpper(int bucket) {
  if (bucket < kSubBuckets) return static_cast<uint64_t>(bucket);
  const int msb = bucket / kSubBuckets + 2;
  const uint64_t sub = static_cast<uint64_t>(bucket % kSubBuckets);
  if (msb >= 63) return UINT64_MAX;
  const uint64_t base = (1ULL << msb) | (sub << (msb - 3));
  return base + (1ULL << (msb - 3)) - 1;
}

void LatencyHistogram::Record(uint64_t ns) {
  buckets_[static_cast<size_t>(BucketOf(ns))].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  uint64_t m = max_.load(std::memory_order_relaxed);
  while (ns > m && !max_.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {
  }
}

uint64_t LatencyHistogram::Percentile(double q) const {
  const uint64_t n = count();
  if (n == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const uint64_t rank =
      std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(n))));
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets_[static_cast<size_t>(b)].load(std::memory_order_relaxed);
    if (seen >= rank) return std::min(BucketUpper(b), max());
  }
  return max();
}

}  // namespace pagewise::live
