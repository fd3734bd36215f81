// Internal helpers shared by the Tracker backends (src/track/): input
// validation, /proc/self/maps parsing through Env, range bookkeeping, result
// coalescing, and the per-backend factories Tracker::Create dispatches to.
//
// Thread safety: the free functions are stateless and safe from any thread.
// None of this is public API.
#ifndef PAGEWISE_TRACK_TRACK_INTERNAL_H_
#define PAGEWISE_TRACK_TRACK_INTERNAL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/page_ranges.h"
#include "pagewise/probe.h"
#include "pagewise/status.h"
#include "pagewise/tracker.h"
#include "sys/env.h"

namespace pagewise::track_internal {

// One line of /proc/self/maps.
struct Vma {
  uint64_t start = 0;
  uint64_t end = 0;
  int prot = 0;         // PROT_READ | PROT_WRITE | PROT_EXEC
  bool shared = false;  // 's' in the perms column
  uint64_t inode = 0;
  std::string path;  // "" for anonymous, "[heap]", "/memfd:x (deleted)", ...
  // True for memory the tracker can treat as anonymous private memory.
  bool anonymous_private() const {
    return !shared && inode == 0 && (path.empty() || path[0] == '[');
  }
  // True for memfd / MAP_SHARED|MAP_ANONYMOUS / /dev/shm (shmem) mappings.
  bool shmem() const;
};

// Reads /proc/self/maps through env->Open/Pread (so tests can inject
// failures). Returns the VMAs sorted by address.
Result<std::vector<Vma>> ReadMaps(Env* env);

// The VMAs covering [start, end), clipped to it. Error kInvalidArgument
// naming the first unmapped address if any byte of the range is unmapped.
// `op` names the calling operation for the message ("Track").
Result<std::vector<Vma>> CoveringVmas(Env* env, uint64_t start, uint64_t end, const char* op);

// The page size of [start, end) (`vmas` from CoveringVmas): PageSize() for
// anonymous private memory (no smaps read), the VMAs' page size otherwise,
// checked through sys::RangePageSize (one page size, aligned to it:
// kInvalidArgument naming the huge page size). A backend that cannot track
// hugetlbfs (hugetlb_ok false) gets kNotSupported naming uffd-wp-async.
Result<uint64_t> TrackPageSize(Env* env, const std::vector<Vma>& vmas, uint64_t start, uint64_t end,
                               bool hugetlb_ok, const char* backend);

// True if `addr` lies in one of `maps` (sorted, as from ReadMaps).
bool IsMapped(const std::vector<Vma>& maps, uint64_t addr);

// Replaces *ranges (sorted) by their parts that lie in `maps`. Pages the
// tracker remembered as written but that were unmapped since must not be
// reported: the caller would read unmapped memory.
void ClipToMapped(const std::vector<Vma>& maps, std::vector<PageRange>* ranges);

// Checks what every backend's Track/Untrack needs of its arguments: non-null,
// page aligned address and length, len > 0, no address-space wraparound.
// Returns kInvalidArgument with the cause and the fix.
Status CheckRangeArgs(const void* addr, size_t len, const char* op);

// `tracked` must be sorted and non-overlapping. kAlreadyExists if
// [start, end) overlaps one of them (the message names which).
Status CheckNoOverlap(const std::vector<PageRange>& tracked, uint64_t start, uint64_t end);

// Sorts and merges (*v)[from..]: base/page_ranges.h.
using ::pagewise::SortAndCoalesce;

// Appends [start, end) to *v, merging with the last element when they touch.
inline void AppendRange(std::vector<PageRange>* v, uint64_t start, uint64_t end) {
  if (start >= end) return;
  if (!v->empty() && v->back().end >= start && v->back().start <= start) {
    if (end > v->back().end) v->back().end = end;
    return;
  }
  v->push_back({start, end});
}

// "[0x7f..., 0x7f...)" for messages.
std::string RangeString(uint64_t start, uint64_t end);

// Turns a failed UFFDIO_REGISTER into a Status saying why and what to do:
// EBUSY (registered elsewhere) -> kAlreadyExists, EINVAL (memory kind the
// kernel cannot write-protect) -> kNotSupported naming the mapping.
Status RegisterError(const Status& s, uint64_t start, uint64_t end, const std::vector<Vma>& vmas,
                     const char* backend);

// Error for an unknown Untrack range.
Status NotTracked(uint64_t start, uint64_t end, const std::vector<PageRange>& tracked);

// One bit per page, in its own anonymous mapping rather than the heap: the
// uffd-wp fault thread and the mprotect backend's SIGSEGV handler write it,
// and they must never write memory that might itself be tracked (Track()
// refuses ranges that overlap a tracker's own mappings). Words are atomic, so
// a signal handler may set bits while a collector exchanges them.
class PageBitmap {
 public:
  // Maps room for `pages` bits, all clear. On error nothing is mapped.
  static Result<PageBitmap> Create(Env* env, size_t pages);

  PageBitmap() = default;
  PageBitmap(PageBitmap&& o) noexcept { *this = std::move(o); }
  PageBitmap& operator=(PageBitmap&& o) noexcept;
  PageBitmap(const PageBitmap&) = delete;
  PageBitmap& operator=(const PageBitmap&) = delete;
  ~PageBitmap();

  size_t pages() const { return pages_; }
  size_t words() const { return (pages_ + 63) / 64; }
  std::atomic<uint64_t>& word(size_t w) const { return words_[w]; }
  // Async-signal-safe.
  void Set(size_t page) const {
    words_[page / 64].fetch_or(uint64_t{1} << (page % 64), std::memory_order_acq_rel);
  }
  void SetRange(size_t first, size_t last_excl) const;
  bool Test(size_t page) const {
    return (words_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1;
  }
  void ClearAll() const;
  // The mapping backing the bits, for overlap checks.
  PageRange mapping() const {
    return {reinterpret_cast<uint64_t>(words_), reinterpret_cast<uint64_t>(words_) + bytes_};
  }

 private:
  Env* env_ = nullptr;
  std::atomic<uint64_t>* words_ = nullptr;
  size_t pages_ = 0;
  size_t bytes_ = 0;
};

// Writes the byte at p without changing it: an atomic compare-exchange of
// the byte with itself, so a concurrent writer's store is never undone. The
// store really happens, so on a read-only page it write-faults (the mprotect
// backend's SIGSEGV path), and on a private mapping it gives the VMA its
// anon_vma. (A compare-exchange, not fetch_or(0): compilers turn an
// idempotent fetch_or into a plain load, which would not write-fault; clang
// does, even on a volatile pointer.) One byte, so that a caller can stay
// inside a buffer it is about to have overwritten. Async-signal-safe.
inline void AtomicNoOpWrite(void* p) {
  volatile uint8_t* byte = static_cast<volatile uint8_t*>(p);
  uint8_t seen = __atomic_load_n(byte, __ATOMIC_RELAXED);
  while (
      !__atomic_compare_exchange_n(byte, &seen, seen, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

// Calls fn(first_page, last_page_excl) for each run of set bits in `bits`
// (bit i = page i).
template <typename Fn>
void ForEachRun(const PageBitmap& bits, Fn&& fn) {
  size_t run_start = 0;
  bool in_run = false;
  for (size_t w = 0; w < bits.words(); ++w) {
    uint64_t v = bits.word(w).load(std::memory_order_relaxed);
    if (!in_run && v == 0) continue;
    if (in_run && v == ~uint64_t{0}) continue;
    for (size_t b = 0; b < 64; ++b) {
      const size_t page = w * 64 + b;
      if (page >= bits.pages()) break;
      const bool set = (v >> b) & 1;
      if (set && !in_run) {
        run_start = page;
        in_run = true;
      } else if (!set && in_run) {
        fn(run_start, page);
        in_run = false;
      }
    }
  }
  if (in_run) fn(run_start, bits.pages());
}

// Backend factories (one per backend file). `env` is never null.
Result<std::unique_ptr<Tracker>> CreateUffdWpAsync(Env* env, const KernelFeatures& features);
Result<std::unique_ptr<Tracker>> CreateUffdWp(Env* env, const KernelFeatures& features);
Result<std::unique_ptr<Tracker>> CreateMprotect(Env* env, const KernelFeatures& features);
// Why the mprotect backend is unavailable without libpagewise-interpose.
inline constexpr const char* kMprotectNeedsInterposers =
    "the mprotect backend needs libpagewise-interpose, pagewise's libc interposers (madvise, "
    "mprotect, mremap, read family), which this program neither links nor preloads: link it "
    "(pkg-config --libs pagewise-interpose, or CMake pagewise::interpose) or run with "
    "LD_PRELOAD=libpagewise-interpose.so.0, or use a userfaultfd backend";
Result<std::unique_ptr<Tracker>> CreateSoftDirty(Env* env, const KernelFeatures& features);
// two_step.cc: the non-atomic negative control.
Result<std::unique_ptr<Tracker>> CreateTwoStep(Env* env, const KernelFeatures& features);
// The soft-dirty tracker without the availability check (tests drive it
// through an Env that fakes the pagemap bits).
Result<std::unique_ptr<Tracker>> NewSoftDirtyTracker(Env* env);

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_TRACK_INTERNAL_H_
