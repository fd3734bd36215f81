// Internals of the never-lose-a-write check (include/pagewise/check.h):
// the state shared by the run's threads, the page stamp layout, and the
// scenario "disturber" loops (check_scenarios.cc).
//
// Thread safety: RunState is shared by the writers, the collector and the
// disturber; its mutable fields are atomics or guarded by error_mu. The
// region's memory is written by writers (relaxed atomic stores), read by the
// collector (relaxed atomic loads) and changed by the kernel (DONTNEED).
#ifndef PAGEWISE_TRACK_CHECK_INTERNAL_H_
#define PAGEWISE_TRACK_CHECK_INTERNAL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "pagewise/check.h"
#include "pagewise/status.h"

namespace pagewise::check_internal {

// A page holds 16-byte slots; writer thread t stamps slot t with
// {StampTag(page, t), counter}, the counter starting at 1 and growing by one
// per write, so every write stores a value that page never held. Fork
// children stamp slot kChildSlot with kChildTag (never used by the parent).
inline constexpr size_t kSlotBytes = 16;
inline constexpr int kMaxThreads = 255;
inline constexpr size_t kChildSlot = 255;
inline constexpr uint64_t kChildTag = 0xC411D000C411D000ull;
inline uint64_t StampTag(uint64_t page, uint64_t thread) {
  return (page << 8 | thread) ^ 0x5A5A000000000000ull;
}

// Pages per chunk in the mprotect scenario (the unit a writer and the
// protection toggler exclude each other on).
inline constexpr size_t kChunkPages = 64;

// Small fast PRNG (splitmix64), one per thread.
class Rng {
 public:
  explicit Rng(uint64_t seed) : x_(seed) {}
  uint64_t Next() {
    uint64_t z = (x_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  uint64_t x_;
};

// Monotonic clock in nanoseconds.
uint64_t MonoNs();

struct RunState {
  CheckScenario scenario = CheckScenario::kWrites;
  char* region = nullptr;
  size_t page = 4096;
  size_t npages = 0;
  size_t huge = 2 << 20;  // THP unit (thp scenario)
  uint64_t deadline_ns = 0;
  uint64_t seed = 0;

  // mprotect scenario: per chunk, >= 0 = writers inside, -1 = the toggler
  // holds it (its pages may be PROT_READ: writers must not touch them).
  std::unique_ptr<std::atomic<int32_t>[]> chunk_state;
  size_t nchunks = 0;

  std::atomic<bool> stop{false};          // set on error
  std::atomic<uint64_t> rounds{0};        // collects done; waited on by the disturber
  std::atomic<int> writers_running{0};
  std::atomic<bool> disturber_done{false};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> scenario_ops{0};

  // Records the first failure and asks every thread to stop.
  void Fail(const Status& status);
  Status first_error() const;
  // Wakes threads waiting on `rounds` (after a collect or on stop).
  void BumpRound();

 private:
  mutable std::mutex error_mu_;
  Status first_error_;
};

// The scenario's disturbing loop: runs until the deadline passes or stop is
// set, doing a few actions after each collect round. Failures go to
// state->Fail(). Sets state->disturber_done before returning. For scenarios
// without disturbance (writes, shmem) it returns at once.
void RunDisturber(RunState* state);

}  // namespace pagewise::check_internal

#endif  // PAGEWISE_TRACK_CHECK_INTERNAL_H_
