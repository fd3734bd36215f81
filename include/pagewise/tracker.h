// Tracker: which pages were written since I last asked?
//
// THE CONTRACT. After Track(range) returns OK, every write to a page of the
// range shows up in the ranges returned by a later Collect():
//   - a write that completes before Collect() starts appears in that collect
//     (mprotect backend: or in the next one, if another thread's fault
//     handler for that same page was still running when Collect() started);
//   - a write that races a Collect() appears in that collect or, if it lands
//     after the page was examined and re-armed, in the next one;
//   - never in none. Each backend's Collect() takes the written set and
//     re-arms it so that no write can slip between "read" and "re-arm"
//     (uffd-wp-async: PAGEMAP_SCAN with PM_SCAN_WP_MATCHING under the
//     page-table lock; uffd-wp and mprotect: see their sources).
// Callers read page contents AFTER Collect() returns: a page reported written
// and then copied holds at least every write the report covers; a write that
// lands during the copy is reported again by the next collect.
// Reports may over-approximate (a clean page reported written: e.g. whole
// transparent huge pages, pages dropped with MADV_DONTNEED, pages whose
// protection changed), never under-approximate. The first Collect() after
// Track() reports only pages written after Track(). Reported pages are
// mapped when Collect() looks (pages unmapped since their write are left
// out). Only writes through the tracked mapping count: a write to shared
// memory through another mapping or by another process is not seen.
//
// Memory events on tracked ranges (all measured on Linux 6.18; tests in
// src/track/tracker_test.cc, tests/track_fork_test.cc):
//   - MADV_DONTNEED / MADV_REMOVE / MADV_FREE: the dropped pages read as
//     zero (or as the file) afterwards; they are reported written by the next
//     collect. uffd-wp-async and uffd-wp see anonymous DONTNEED through the
//     kernel (the zapped ptes read as written). Drops the page tables hide
//     (shmem MADV_REMOVE, DONTNEED on private hugetlbfs or private file
//     mappings: the pte keeps its write protection) uffd-wp-async sees
//     through UFFD_EVENT_REMOVE, with or without libpagewise-interpose, raw
//     madvise system calls included (such memory then costs its madvise
//     calls a round trip to a tracker thread). uffd-wp, mprotect and
//     soft-dirty see them only through libpagewise-interpose's madvise()
//     (below); without it uffd-wp refuses shared and file-backed memory
//     (kNotSupported naming uffd-wp-async). Drops through the file
//     (fallocate PUNCH_HOLE, truncate) are writes through another path: not
//     seen.
//   - munmap of a tracked range: those pages are no longer reported; call
//     Untrack() for them (Untrack of an unmapped range succeeds). If memory
//     is mapped again at a tracked address before Untrack, uffd-wp-async's
//     Collect fails with kFailedPrecondition for that range (after
//     collecting the rest); the others report or protect the new memory as
//     if it were the old. Untrack first.
//   - mremap of a tracked range: the tracker does not follow the move;
//     Untrack the old range and Track the new one. (mprotect backend: the
//     interposed mremap gives the moving pages the program's protection
//     first, so the moved memory is writable.)
//   - mprotect: protection changes do not lose writes (uffd-wp bits live in
//     the ptes; the mprotect backend interposes mprotect, below).
//   - fork: the child is not tracked and runs unhindered (its VMAs lose the
//     userfaultfd registration; with mprotect, the child's own copy of the
//     handler unprotects its pages); the parent's tracking is unaffected.
//     The Tracker object's methods return kFailedPrecondition in the child.
//   - THP: a written huge page may be reported as a whole (2 MiB).
//
// Interposed libc functions (opt-in). Linking libpagewise replaces no libc
// function. A program that wants the mprotect backend also links (or
// LD_PRELOADs) libpagewise-interpose (pkg-config pagewise-interpose, CMake
// pagewise::interpose), which defines madvise(), mprotect() and mremap()
// and the read family read(), pread(), pread64(), readv(), preadv(),
// preadv64(), preadv2(), preadv64v2(), recv(), recvfrom(), recvmsg() with
// their fortified __*_chk variants (src/sys/interpose/); calls through libc's
// symbols in this process then reach pagewise first, then the kernel. Only
// the mprotect backend changes what they do; the other backends use the
// madvise hook, when present, to see drops the kernel hides (uffd-wp: shmem
// MADV_REMOVE; every drop for soft-dirty; uffd-wp-async needs no hook).
// Without it the mprotect backend is unavailable (DescribeBackends says
// why; kAuto never picks it; asking for it returns kNotSupported naming the
// library). Raw system calls and glibc-internal calls (malloc trimming its
// arenas, stdio's fread reading straight into the caller's buffer) bypass
// the interposers. The read family is reached through raw system calls,
// which are not pthread cancellation points.
//
// Backends (see DescribeBackends for what this kernel offers):
//   uffd-wp-async  userfaultfd WP_ASYNC + PAGEMAP_SCAN WP_MATCHING. Atomic,
//                  fastest; the default where available. Needs Linux 6.7.
//                  Memory: anonymous private, memfd/shmem, hugetlbfs (2 MiB
//                  and 1 GiB pages, private or shared; tracked, reported
//                  and re-armed in whole huge pages).
//   uffd-wp        synchronous userfaultfd write-protect faults served by a
//                  tracker thread that records the page and unprotects it.
//                  Atomic. Writers pay a round trip to the thread on the
//                  first write after each collect. Memory: anonymous
//                  private and memfd/shmem (hugetlbfs: kNotSupported). The
//                  program must not track the stack of a thread that calls
//                  Collect(), nor memory its fault hook writes (internal
//                  UffdWpTracker, src/track/uffd_wp_tracker.h); Track()
//                  refuses the tracker's own thread stack and bitmaps.
//   mprotect       PROT_READ + a SIGSEGV handler that records the page and
//                  gives it the program's protection back. Works without
//                  userfaultfd, on any mapping but hugetlbfs. Chains to the SIGSEGV handler
//                  installed before the tracker was created (SA_SIGINFO or
//                  plain; SIG_DFL/SIG_IGN: default action) for faults outside
//                  tracked pages and for writes to pages the program itself
//                  made read-only. One per process. What it needs from the
//                  program: change protection of tracked memory only with
//                  libc mprotect()/mremap() and drop pages only with libc
//                  madvise() (interposed: a requested PROT_WRITE is granted
//                  page by page on the first write); do not replace the
//                  SIGSEGV handler while the tracker exists (install yours
//                  first: it gets chained); Untrack before munmap or mmap
//                  MAP_FIXED over tracked memory. MADV_FREE pages that the
//                  kernel discards later are not reported.
//                  Kernel writes. The kernel's own stores into a PROT_READ
//                  page raise no SIGSEGV: they fail (EFAULT, or a short
//                  count). Covered: the interposed libc read family above
//                  write-faults every tracked destination page (buffers,
//                  iovec targets, recvfrom's address and length, recvmsg's
//                  header, name and control buffers) before the call, so
//                  the call succeeds and the pages are reported written. If
//                  a Collect() re-protects a destination page between that
//                  and the kernel's copy, the call returns a short count
//                  (some bytes copied), or EFAULT before any byte: then it
//                  is retried (up to 8 times) on regular files, block
//                  devices, pipes, stream sockets and with MSG_PEEK, where
//                  a faulted copy consumes nothing; other descriptors
//                  (datagram sockets, eventfd, signalfd, timerfd, ttys,
//                  ...) may have dequeued the data, and return EFAULT. For
//                  recvfrom/recvmsg the address, header and control buffer
//                  are written after the data: a collect during a blocking
//                  receive can make that write fail (EFAULT or MSG_CTRUNC)
//                  after the data was consumed; keep them out of tracked
//                  memory. Not covered, and failing with EFAULT when their
//                  output lands in an unwritten tracked page: every other
//                  system call that stores into user memory (fstat/stat,
//                  poll/epoll_wait, wait status, pipe/socketpair fd arrays,
//                  getrandom, getdents, recvmmsg, process_vm_writev
//                  into this process, read-family calls made through the
//                  syscall function or inside glibc, e.g. a large fread);
//                  io_uring and Linux AIO, whose kernel workers
//                  write completions and buffers asynchronously (a read
//                  into tracked memory fails with -EFAULT in its
//                  completion). Not seen at all, because they never touch
//                  the tracked mapping's protection: writes through
//                  /proc/self/mem into private tracked memory (FOLL_FORCE
//                  writes past the read-only pte without a fault: the data
//                  lands, the page is not reported); and, for a memfd
//                  tracked through a MAP_SHARED mapping, fallocate
//                  (FALLOC_FL_PUNCH_HOLE) or a truncation of the file, which
//                  zero the pages behind the mapping without a write or a
//                  madvise (not reported). Programs may also crash (SIGSEGV
//                  or SIGBUS) where they would have got EFAULT when reading
//                  into a tracked page that was unmapped without Untrack,
//                  or that lies past the end of its shared file.
//   soft-dirty     clear_refs + pagemap bit 55; NOT atomic: clearing is
//                  process-wide and separate from reading, so a write racing
//                  a collect can be lost. Offered only where the kernel has
//                  it, and never chosen automatically.
//   two-step       a negative control, NOT atomic and never chosen
//                  automatically: uffd-wp-async's machinery in a soft-dirty
//                  pre-dump's order (report written pages without re-arming
//                  them; re-arm them at the start of the next collect), so
//                  a write between the caller's copy and that re-arm is
//                  lost. `pagewise check --backend two-step` shows it.
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

#include "pagewise/export.h"
#include "pagewise/probe.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

enum class TrackBackend { kAuto, kUffdWpAsync, kUffdWp, kMprotect, kSoftDirty, kTwoStep };

// "auto", "uffd-wp-async", "uffd-wp", "mprotect", "soft-dirty", "two-step".
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
  // alternatives; an unknown enum value is kInvalidArgument. Only one
  // mprotect-backend tracker may exist per process (kFailedPrecondition).
  // Kernel-call failures (userfaultfd creation, /proc/self/pagemap) are
  // returned as they are; nothing is left open.
  static Result<std::unique_ptr<Tracker>> Create(const TrackerOptions& options = {});

  virtual ~Tracker() = default;
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;

  virtual TrackBackend backend() const = 0;

  // Starts tracking [addr, addr+len). Preconditions: addr and len are page
  // aligned (huge-page aligned for hugetlbfs: kInvalidArgument naming the
  // huge page size otherwise), len > 0, the range is mapped
  // (anonymous private, memfd/shmem shared, or THP-backed anonymous) and
  // overlaps no range this tracker already tracks. Errors: kInvalidArgument
  // for unaligned/empty/unmapped ranges, kAlreadyExists for an overlap,
  // kNotSupported when the backend cannot track this kind of memory. On any
  // error nothing is left tracked or protected.
  virtual Status Track(void* addr, size_t len) = 0;

  // Stops tracking [addr, addr+len), which must be exactly a range passed to
  // Track() (else kNotFound). Writes since the last collect to that range are
  // discarded. Succeeds if the memory was unmapped meanwhile. On error the
  // range stays tracked and armed (retry, or destroy the tracker).
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

 protected:
  Tracker() = default;
};

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_TRACKER_H_
