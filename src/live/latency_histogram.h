// LatencyHistogram: constant-memory record of durations (nanoseconds) with
// exact maximum and percentiles accurate to one bucket (buckets grow by
// 2^(1/8), about 9%).
//
// Thread safety: Record() is safe from any number of threads (relaxed
// atomics); Percentile() and max() may run concurrently and see a recent
// state.
#ifndef PAGEWISE_LIVE_LATENCY_HISTOGRAM_H_
#define PAGEWISE_LIVE_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

namespace pagewise::live {

class LatencyHistogram {
 public:
  static constexpr int kSubBuckets = 8;  // per power of two
  static constexpr int kBuckets = 64 * kSubBuckets;

  void Record(uint64_t ns);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  // Upper bound of the bucket holding the q-quantile (q in [0, 1]), capped
  // at max(); 0 when empty.
  uint64_t Percentile(double q) const;

  // Bucket index of a value, and the largest value a bucket holds.
  static int BucketOf(uint64_t ns);
  static uint64_t BucketUpper(int bucket);

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> max_{0};
};

}  // namespace pagewise::live

#endif  // PAGEWISE_LIVE_LATENCY_HISTOGRAM_H_
