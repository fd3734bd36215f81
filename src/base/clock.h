// The clock and timeout helpers every subsystem shares.
//
// NowNs() is the monotonic clock (CLOCK_MONOTONIC through steady_clock) in
// nanoseconds: for statistics (*_ns fields) and deadlines. The helpers turn
// a public Duration (pagewise/time.h: kNoTimeout means no limit, negative
// means zero) into what poll(2) and condition variables take, without
// overflowing on kNoTimeout.
//
// Thread safety: free functions, reentrant.
#ifndef PAGEWISE_BASE_CLOCK_H_
#define PAGEWISE_BASE_CLOCK_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

#include "pagewise/time.h"

namespace pagewise {

// Monotonic time in nanoseconds (arbitrary origin, never goes back).
inline uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Wall-clock time (system_clock) in nanoseconds since the Unix epoch: for
// times kept across runs (the disk cache's last-use times). May go back
// when the clock is set; never use it for deadlines.
inline int64_t WallClockNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// True if `timeout` means "no limit" (kNoTimeout, or so far away that a
// deadline computed from it would overflow: more than a century).
inline bool IsUnlimited(Duration timeout) {
  return timeout >= std::chrono::duration_cast<Duration>(std::chrono::hours(24 * 365 * 100));
}

// poll(2)'s timeout for `timeout`: -1 when unlimited, 0 when negative or
// zero, else milliseconds rounded up (a wait never ends early), at most
// INT_MAX.
int PollTimeoutMs(Duration timeout);

// A steady_clock deadline `timeout` from now; time_point::max() when
// unlimited, now when negative.
std::chrono::steady_clock::time_point DeadlineAfter(Duration timeout);

// "250 ms", "3 s", "no limit": a timeout for messages.
std::string DurationText(Duration timeout);

// Waits on `cv` until pred() holds or `timeout` expires; returns pred().
// Unlimited timeouts wait without a deadline (no overflow).
template <typename Pred>
bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Duration timeout,
             Pred pred) {
  if (IsUnlimited(timeout)) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_until(lock, DeadlineAfter(timeout), pred);
}

}  // namespace pagewise

#endif  // PAGEWISE_BASE_CLOCK_H_
