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

#include "base/clock.h"
#include "pagewise/check.h"
#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::kvm {
class Guest;
}  // namespace pagewise::kvm

namespace pagewise::check_internal {

// A page holds 16-byte slots; writer thread t stamps slot t with
// {StampTag(page, t), counter}, the counter starting at 1 and growing by one
// per write, so every write stores a value that page never held. Fork
// children stamp slot kChildSlot with kChildTag (never used by the parent);
// the syscall scenario has the kernel stamp slot kKernelSlot with
// {StampTag(page, kKernelSlot), counter} through read(2).
inline constexpr size_t kSlotBytes = 16;
inline constexpr int kMaxThreads = 254;
inline constexpr size_t kKernelSlot = 254;
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

struct RunState {
  CheckScenario scenario = CheckScenario::kWrites;
  char* region = nullptr;
  size_t page = 4096;
  size_t npages = 0;
  size_t huge = 2 << 20;  // THP unit (thp scenario)
  uint64_t start_ns = 0;
  uint64_t deadline_ns = 0;
  uint64_t seed = 0;

  // The hot window: writers write random pages of a window of window_pages
  // pages whose start sweeps once through the region over the run (wrapping
  // at the end). Pages behind the window are not written again, so a lost
  // last write to a page cannot be hidden by a later, reported one.
  size_t window_pages = 0;
  // Writes each writer makes per collect round before it waits for the next
  // round. Without a quota, writers that never block starve the collector on
  // a busy machine (a handful of rounds per second, every window page
  // written in each); with it, writes cluster around the start of each
  // Collect(), where the races are.
  uint64_t writes_per_round = 0;
  // First page of the window at time `now_ns`.
  size_t WindowStart(uint64_t now_ns) const {
    if (now_ns <= start_ns || deadline_ns <= start_ns) return 0;
    const double f =
        static_cast<double>(now_ns - start_ns) / static_cast<double>(deadline_ns - start_ns);
    return static_cast<size_t>(f * static_cast<double>(npages)) % npages;
  }
  // A random page of the window at `now_ns`.
  size_t HotPage(uint64_t now_ns, Rng* rng) const {
    return (WindowStart(now_ns) + rng->Below(window_pages)) % npages;
  }

  // mprotect scenario: per chunk, >= 0 = writers inside, -1 = the toggler
  // holds it (its pages may be PROT_READ: writers must not touch them).
  std::unique_ptr<std::atomic<int32_t>[]> chunk_state;
  size_t nchunks = 0;

  // kvm scenario: the guest writer 0 stores through (owned by RunCheck),
  // and the guest physical address of the region's first byte.
  kvm::Guest* guest = nullptr;
  uint64_t guest_phys = 0;

  std::atomic<bool> stop{false};  // set on error
  // Collect rounds done (wraps; only compared for change). Writers wait on
  // it when their per-round quota is spent. 32-bit: a futex word.
  std::atomic<uint32_t> rounds{0};
  std::atomic<int> writers_running{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> scenario_ops{0};

  // Records the first failure and asks every thread to stop.
  void Fail(const Status& status);
  Status first_error() const;

 private:
  mutable std::mutex error_mu_;
  Status first_error_;
};

// A writer's per-round quota: true once `this_round` writes reached the
// quota and the writer waited for the collector's next round (then
// *this_round is reset); false while the quota is not spent.
bool WaitForNextRound(RunState* st, uint64_t* this_round, uint32_t* round);

// ---- hugetlb and kvm scenarios (check_kinds.cc) ----------------------------
// Maps `len` bytes (a multiple of st's huge page) of 2 MiB hugetlbfs memory
// at *base. kNotSupported when the pool has too few free pages (the message
// says how to add them).
Status MapHugetlb(Env* env, size_t len, void** base);
// The hugetlb disturber: MADV_DONTNEED of one whole huge page of the window.
Status DropHugePage(RunState* st, Rng* rng);
// The kvm scenario: a guest whose memory is the region (st->guest and
// st->guest_phys are set from it). kNotSupported without /dev/kvm.
Result<std::unique_ptr<kvm::Guest>> MakeCheckGuest(RunState* st);
// Writer `tid`'s loop for the kvm scenario: the same stamps as Writer's,
// stored by the guest in batches.
void GuestWriter(RunState* st, int tid);

// The mprotect scenario's toggler state: the chunk it holds READ, if any.
struct Toggle {
  long chunk = -1;     // -1: none held
  uint32_t round = 0;  // collect round when it was taken
  char* start = nullptr;
  size_t len = 0;
};

// Disturbs the region the scenario's way (check_scenarios.cc). Hosted by
// writer thread 0, which calls MaybeAct() between write batches and Finish()
// once it stops writing. Not thread-safe: one thread uses it.
class Disturber {
 public:
  explicit Disturber(RunState* st);
  ~Disturber();
  // Does one action if the scenario's interval has passed since the last;
  // no-op for scenarios without disturbance. Errors name the failing call.
  Status MaybeAct(uint64_t now_ns);
  // Undoes lasting effects (a chunk left PROT_READ). Call once at the end.
  Status Finish();

 private:
  RunState* st_;
  Rng rng_;
  int pipe_[2] = {-1, -1};  // syscall scenario
  uint64_t kernel_writes_ = 0;
  std::unique_ptr<Toggle> toggle_ = std::make_unique<Toggle>();
  bool active_ = true;
  uint64_t interval_ns_ = 0;
  uint64_t next_ns_ = 0;
};

}  // namespace pagewise::check_internal

#endif  // PAGEWISE_TRACK_CHECK_INTERNAL_H_
