// Tracker: which pages were written since I last asked?
//
// THE CONTRACT. After Track(range) returns OK, every write to a page of the
// range shows up in the ranges returned by a later Collect():
//   - a write that completes before Collect() starts appears in that collect;
//   - a write that races a Collect() appears in that collect or, if it lands
//     after the page was examined and re-armed, in the next one;
//   - never in none. Collect() reports and re-arms each page in one atomic
//     step (backend uffd-wp-async: PAGEMAP_SCAN with PM_SCAN_WP_MATCHING under
//     the page-table lock), so no write can slip between "read" and "re-arm".
// Callers read page contents AFTER Collect() returns: a page reported written
// and then copied holds at least every write the report covers; a write that
// lands during the copy is reported again by the next collect.
// Reports may over-approximate (a clean page reported written: e.g. whole
// transparent huge pages, pages dropped with MADV_DONTNEED, pages whose
// protection changed), never under-approximate. The first Collect() after
// Track() reports only pages written after Track().
//
// Memory events on tracked ranges:
//   - MADV_DONTNEED / MADV_REMOVE: the dropped pages read as zero afterwards;
//     they are reported written by the next collect (content changed to 0).
//   - munmap of a tracked range: those pages are no longer reported; call
//     Untrack() for them (Untrack of an unmapped range succeeds).
//   - mremap of a tracked range: the tracker does not follow the move;
//     Untrack the old range and Track the new one.
//   - mprotect: protection changes do not lose writes.
//   - fork: the child is not tracked; the parent's tracking is unaffected
//     (backend-specific notes below).
//   - THP: a written huge page may be reported as a whole (2 MiB).
//
// Backends (see DescribeBackends for what this kernel offers):
//   uffd-wp-async  userfaultfd WP_ASYNC + PAGEMAP_SCAN WP_MATCHING. Atomic,
//                  fastest; the default where available. Needs Linux 6.7.
//   uffd-wp        synchronous userfaultfd write-protect faults served by a
//                  tracker thread that records the page and unprotects it.
//                  Atomic. Writers pay a round trip to the thread on the
//                  first write after each collect.
//   mprotect       PROT_READ + a SIGSEGV handler that records the page and
//                  restores PROT_WRITE. Works without userfaultfd. Chains to
//                  a SIGSEGV handler installed before pagewise's for faults
//                  outside tracked ranges. Tracked ranges must be private or
//                  shared memory mapped read-write. Atomic per page (the
//                  collect re-protects each reported page before reading).
//   soft-dirty     clear_refs + pagemap bit 55; NOT atomic: clearing is
//                  process-wide and separate from reading, so a write racing
//                  a collect can be lost. Offered only where the kernel has
//                  it, and never chosen automatically.
//
// Thread safety: one Tracker may be used from several threads; Track,
// Untrack and Collect serialise on an internal lock. Writers (any thread of
// the process) need no coordination with the tracker. The destructor stops
// tracking every range and restores protection.
#ifndef PAGEWISE_TRACKER_H_
#define PAGEWISE_TRACKER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/env.h"
#include "pagewise/probe.h"
#include "pagewise/status.h"

namespace pagewise {

enum class TrackBackend { kAuto, kUffdWpAsync, kUffdWp, kMprotect, kSoftDirty };

// "auto", "uffd-wp-async", "uffd-wp", "mprotect", "soft-dirty".
std::string_view BackendName(TrackBackend backend);
// Parses a backend name; unknown names get kInvalidArgument listing the valid ones.
Result<TrackBackend> ParseBackend(std::string_view name);

struct BackendInfo {
  std::string name;
  bool available = false;
  bool atomic = false;  // collect and re-arm are one step per page
  std::string reason;   // why unavailable, or what it cannot guarantee
};

// Every concrete backend, best first, as this kernel offers them.
std::vector<BackendInfo> DescribeBackends(const KernelFeatures& features);

// [start, end) in bytes, page aligned.
struct PageRange {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t pages(size_t page_size) const { return (end - start) / page_size; }
  bool operator==(const PageRange&) const = default;
};

struct TrackerOptions {
  TrackBackend backend = TrackBackend::kAuto;
  Env* env = nullptr;  // nullptr: Env::Default()
};

struct TrackerStats {
  uint64_t collects = 0;
  uint64_t pages_reported = 0;
  uint64_t faults_handled = 0;  // uffd-wp / mprotect: write faults served
};

class Tracker {
 public:
  // Creates a tracker with the chosen backend. kAuto picks the best atomic
  // backend available (uffd-wp-async, then uffd-wp, then mprotect). Naming a
  // backend the kernel lacks returns kNotSupported with the reason and the
  // alternatives. Only one mprotect-backend tracker may exist per process.
  static Result<std::unique_ptr<Tracker>> Create(const TrackerOptions& options = {});

  virtual ~Tracker() = default;

  virtual TrackBackend backend() const = 0;

  // Starts tracking [addr, addr+len). Preconditions: addr and len are page
  // aligned (huge-page aligned for hugetlbfs), len > 0, the range is mapped
  // (anonymous private, memfd/shmem shared, or THP-backed anonymous) and
  // overlaps no range this tracker already tracks. Errors: kInvalidArgument
  // for unaligned/empty/unmapped ranges, kAlreadyExists for an overlap,
  // kNotSupported when the backend cannot track this kind of memory. On any
  // error nothing is left tracked or protected.
  virtual Status Track(void* addr, size_t len) = 0;

  // Stops tracking [addr, addr+len), which must be exactly a range passed to
  // Track(). Writes since the last collect to that range are discarded.
  // Succeeds if the memory was unmapped meanwhile.
  virtual Status Untrack(void* addr, size_t len) = 0;

  // Appends to *written the pages written since the previous Collect() (or
  // since Track()), sorted, coalesced, and re-arms them, atomically per page
  // (see the contract above). On error, tracking stays armed, and pages
  // already re-armed by this call are still appended to *written so that
  // nothing is lost; the caller must treat them as written.
  virtual Status Collect(std::vector<PageRange>* written) = 0;

  virtual TrackerStats stats() const = 0;

  // The ranges currently tracked, sorted.
  virtual std::vector<PageRange> tracked() const = 0;
};

}  // namespace pagewise

#endif  // PAGEWISE_TRACKER_H_
