// Lazy restore: map memory now, fill it page by page from a source as the
// program touches it, and in the background until all of it is resident.
//
// A PageSource is a flat view of memory content (Firecracker's guest-memory
// file layout): a size and reads of [offset, offset+len), plus an optional
// zero classification so that zero pages are installed with
// UFFDIO_ZEROPAGE instead of being copied. Sources: a flat memory file
// (mmap or pread), a caller-owned buffer, and an Image (its flat view, with
// Classify() for zero pages). A source may also tell reads by priority
// (ReadWithPriority): a demand fault waits for its read, a background fill
// does not; remote sources use that to order their fetches.
//
// LazyRestore maps regions (pagewise::Region: address 0 for fresh
// anonymous mappings, or the address of a private anonymous mapping the
// caller gives; `offset` is the region's place in the source's flat view),
// registers them with a userfaultfd

// in MISSING mode with EVENT_FORK|EVENT_REMAP|EVENT_REMOVE|EVENT_UNMAP, and
// serves faults from the source: a fault at page p fills the contiguous run
// of not-yet-filled pages around p inside an aligned window; a background
// filler installs the rest, favouring (1) a recorded working-set trace,
// (2) the neighbourhood of recent faults, (3) everything else in address
// order. The program may fork, mremap, madvise(MADV_DONTNEED) and munmap
// the regions while they are being restored: a forked child is served too
// (identical content), moved ranges keep their content, dropped ranges read
// as zero (never image data), unmapped ranges are forgotten. See
// docs/restore.md for the design and the event handling.
//
// Working-set traces: a restore can record the flat offsets of the pages its
// demand faults installed (deduplicated, in first-fault order, with
// timestamps) and save them as a small checksummed file (by convention
// IMAGE.trace); a later restore given that trace installs those pages
// first, in large batches (by default before Start() returns).
//
// Limits: 4 KiB pages of private anonymous memory only (no hugetlbfs, no
// shmem/memfd destinations; THP-enabled ranges are filled 4 KiB at a time).
//
// How pages are installed is a FillPolicy (fault window, background
// batches, zero pages, prefetch list, trace recording), the same struct for
// an in-process LazyRestore and for every client of a PageServer
// (pagewise/serve.h); ValidateFillPolicy() refuses values out of range
// instead of clamping them.
//
// Ownership: LazyRestore owns the memory it mapped (regions given with
// address 0) and unmaps it when destroyed, as RestoredMemory does for an
// eager restore; Release() hands it to the caller instead.
//
// Thread safety: PageSource implementations are immutable after creation;
// every const method is safe from any number of threads. LazyRestore's
// methods are safe from any thread; only its destruction must not race
// them. Trace functions are plain functions over values.
#ifndef PAGEWISE_RESTORE_H_
#define PAGEWISE_RESTORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/region.h"
#include "pagewise/status.h"
#include "pagewise/time.h"

namespace pagewise {
PAGEWISE_API_BEGIN

class Image;

// ---- sources ----------------------------------------------------------------

// Why a source is read: a demand fault (a thread of the program is blocked
// until the read returns), the prefetch list (the program may be waiting
// for the working set), or the background filler (nobody waits).
enum class ReadPriority { kDemand, kPrefetch, kBackground };

class PageSource {
 public:
  virtual ~PageSource() = default;

  // Bytes in the flat view. Reads beyond it return zeros.
  virtual uint64_t size() const = 0;

  // Copies [offset, offset+len) of the flat view into dst (the part beyond
  // size() reads as zero). Errors: kIoError/kCorruption from the backing
  // store, naming offset and what to check.
  virtual Status Read(uint64_t offset, void* dst, size_t len) const = 0;

  // Read(), told why the bytes are wanted. The restore engine calls this;
  // a source whose reads queue behind each other (remote object storage, a
  // page server over TCP) overrides it to serve kDemand first. Same
  // contract and errors as Read(); the default simply calls Read().
  virtual Status ReadWithPriority(uint64_t offset, void* dst, size_t len,
                                  ReadPriority priority) const {
    (void)priority;
    return Read(offset, dst, len);
  }

  // A hint: the pages at these flat offsets (in this order) will be read
  // soon at `priority`. A remote source starts fetching what they need, in
  // parallel; the default does nothing. Never fails (a fetch that fails
  // here is retried, and reported, by the read that needs it).
  virtual void WillNeed(const std::vector<uint64_t>& offsets, ReadPriority priority) const {
    (void)offsets;
    (void)priority;
  }

  // If the bytes [offset, offset+len) are directly addressable in this
  // process (a mapped file, a buffer) returns a pointer to them, valid for
  // the source's lifetime; nullptr when the caller must Read(). Never
  // returns a pointer for a range that extends beyond size().
  virtual const void* Direct(uint64_t offset, size_t len) const {
    (void)offset;
    (void)len;
    return nullptr;
  }

  // True if ClassifyZero() can tell zero pages without reading them.
  virtual bool can_classify() const { return false; }

  // For each of the `npages` pages of `page_size` bytes starting at
  // `offset`, sets (*zero)[i] to 1 if the page is known to be all zero
  // (recorded as zero, absent, or beyond size()), else 0. The default marks
  // only pages beyond size(). Errors as Read().
  virtual Status ClassifyZero(uint64_t offset, size_t npages, size_t page_size,
                              std::vector<uint8_t>* zero) const;

  // A short human description ("mem-file /path (123 MiB)").
  virtual std::string Describe() const = 0;
};

enum class MemFileAccess { kMmap, kPread };

// Opens a flat memory file (Firecracker's memory snapshot layout: the
// guest's regions at their offsets). kMmap maps it read-only (the file must
// not shrink while in use: a read past its new end would raise SIGBUS);
// kPread reads it with pread, so a file that shrinks or changes cannot
// crash the reader: pages past the new end fail to read (a restore then
// poisons them, SIGBUS for the program, never zeros). A page server serves
// memory files with kPread. Errors: the file cannot be opened or mapped,
// or is not a regular file (kInvalidArgument).
Result<std::shared_ptr<PageSource>> OpenMemFileSource(const std::string& path,
                                                      MemFileAccess access = MemFileAccess::kMmap);

// A source over caller-owned bytes [data, data+size); the bytes must stay
// valid and unchanged while the source is used.
std::shared_ptr<PageSource> MemorySource(const void* data, uint64_t size);

// The flat view of an opened image (Image::ReadFlat / flat_size), with
// Image::ClassifyRuns for zero pages. Shares ownership of the image.
std::shared_ptr<PageSource> ImageSource(std::shared_ptr<const Image> image);
// Image::Open(path) (checks header and index checksums of every layer),
// then ImageSource. Errors are Image::Open's.
Result<std::shared_ptr<PageSource>> OpenImageSource(const std::string& path);

// ---- working-set traces ------------------------------------------------------

// One demand fault: the flat offset of the faulting page, and nanoseconds
// since the restore started.
struct TraceEntry {
  uint64_t offset = 0;
  uint64_t time_ns = 0;
};

struct WorkingSetTrace {
  uint32_t page_size = 4096;
  uint64_t source_size = 0;         // flat size of the source recorded from
  std::vector<TraceEntry> entries;  // first-fault order, offsets unique
};

// The conventional trace path beside an image or memory file: PATH.trace.
std::string TracePathFor(const std::string& source_path);

// Writes `trace` to `path` atomically (temporary file, fsync, rename, fsync
// of the directory). Format (little-endian): "PWTRACE1", u32 version (1),
// u32 page_size, u64 source_size, u64 count, count x {u64 offset, u64
// time_ns}, u64 XXH64 (seed 0) of everything before it.
Status WriteTrace(const std::string& path, const WorkingSetTrace& trace);

// Reads and checks a trace: kNotFound if missing, kCorruption (naming the
// file and the reason) on a bad magic, version, size or checksum.
Result<WorkingSetTrace> ReadTrace(const std::string& path);

// ---- fill policy -------------------------------------------------------------

// How a restore installs pages: shared by LazyRestore (RestoreOptions::fill)
// and every client of a PageServer (ServeOptions::fill).
struct FillPolicy {
  // Aligned window of pages filled around a fault (its not yet filled
  // pages around the faulting one): 1..512.
  size_t fault_window_pages = 16;
  // Pages per background fill: 1..4096.
  size_t background_batch_pages = 64;
  bool background_fill = true;  // false: only faults (and the prefetch list) install pages
  bool use_zeropage = true;     // zero pages via UFFDIO_ZEROPAGE
  // Pages to install first (flat offsets, in order), e.g. from ReadTrace().
  std::vector<uint64_t> prefetch;
  // With a prefetch list: LazyRestore::Start() returns only once those
  // pages are installed, in large batches (the working set is in place
  // before the program resumes, as REAP does). false: they are installed
  // first by the background filler while the program already runs (fewer
  // faults saved, earlier first access). A PageServer never blocks a
  // client's handshake: its clients wait for kReadyByte instead.
  bool wait_for_prefetch = true;
  // Keep the demand-fault trace: every page a demand fault installs (a
  // PageServer records its FIRST client's). For a complete working set
  // record with background_fill = false (LazyRestore::Finish() turns the
  // filler on afterwards): otherwise pages the filler installed before the
  // program reached them never fault and are missing from the trace.
  bool record_trace = false;
  // Demand-fault latency samples kept in RestoreStats (the first ones):
  // 0..16777216.
  size_t max_latency_samples = 1 << 16;
};

// OK, or kInvalidArgument naming the first field out of its range and the
// range. LazyRestore::Start and PageServer::Start call it; values are
// never clamped.
Status ValidateFillPolicy(const FillPolicy& policy);

// ---- lazy restore ------------------------------------------------------------

// Fault service latencies in powers of two: bucket k counts samples of at
// most kFirstBucketNs << k nanoseconds (and more than the bucket below);
// the last bucket also takes everything longer. Constant size, so reports
// stay small however many faults they cover.
struct LatencyHistogram {
  static constexpr int kBuckets = 24;
  static constexpr uint64_t kFirstBucketNs = 1000;  // 1 us; the last bound is ~8.4 s
  uint64_t counts[kBuckets] = {};
  uint64_t count = 0;
  uint64_t sum_ns = 0;
  uint64_t max_ns = 0;

  static uint64_t BucketUpperNs(int k) { return kFirstBucketNs << k; }
  void Record(uint64_t ns);
  // Upper bound of the bucket holding the q-quantile, capped at max_ns
  // (nanoseconds); 0 when empty.
  uint64_t PercentileNs(double q) const;
};

// Counters and timings of a restore (or of one server client). Times are
// nanoseconds since the restore started; -1 when the event has not happened.
struct RestoreStats {
  uint64_t pages_total = 0;    // pages of the regions as registered
  uint64_t demand_faults = 0;  // faults that needed source data
  uint64_t other_faults = 0;   // faults served with a zero page or a wake
  // Source pages installed (copied or zero): pages_demand + pages_background
  // is the number of pages restored from the source.
  uint64_t pages_demand = 0;          // while serving faults (the windows)
  uint64_t pages_background = 0;      // by the background filler
  uint64_t pages_prefetch = 0;        // of pages_background, from the trace
  uint64_t prefetch_late_faults = 0;  // demand faults on trace pages not yet prefetched
  // Pages installed with UFFDIO_ZEROPAGE on any path: zero source pages
  // (also counted above) and faults on dropped or foreign pages (not).
  uint64_t zero_pages = 0;
  uint64_t bytes_copied = 0;    // bytes installed with UFFDIO_COPY
  uint64_t eexist_pages = 0;    // pages found already present (EEXIST)
  uint64_t eagain_retries = 0;  // fills retried after EAGAIN
  uint64_t enoent_pages = 0;    // pages whose mapping vanished (ENOENT)
  uint64_t poisoned_pages = 0;  // pages poisoned because the source failed
  uint64_t forks = 0, remaps = 0, removes = 0, unmaps = 0, unknown_events = 0;
  uint64_t spaces_total = 0;    // address spaces served (1 + forked children)
  uint64_t spaces_live = 0;     // of those, still served
  uint64_t spaces_refused = 0;  // forked children over a page server's max_spaces
  int64_t first_fault_ns = -1;  // time to first access (first demand fault)
  int64_t resident_ns = -1;     // time until fully resident
  uint64_t fill_ns = 0;         // time spent reading the source and filling
  // Demand fault latency (message read -> page installed), nanoseconds; at
  // most FillPolicy::max_latency_samples samples (the first ones), with
  // the time each fault was read (nanoseconds since the restore started).
  std::vector<uint32_t> fault_latency_ns;
  std::vector<uint64_t> fault_time_ns;
  uint64_t fault_latency_p50_ns = 0;
  uint64_t fault_latency_p99_ns = 0;

  // Every fault by class, message read -> resolved (all of them, not only
  // the first max_latency_samples):
  //   zero: a page we do not fill from the source (dropped, foreign, or
  //     already present): a zero page or a wake-up;
  //   demand: an unfilled page outside the prefetch list;
  //   prefetch_hit: a page of the prefetch list that the prefetch had
  //     installed (or was installing) when the fault was served;
  //   late_prefetch: a page of the prefetch list not yet installed, so
  //     served on demand (prefetch_late_faults).
  LatencyHistogram latency_zero, latency_demand, latency_prefetch_hit, latency_late_prefetch;
  uint64_t prefetch_hit_faults = 0;
  // Entries of the prefetch list that installed nothing: the page was
  // already present (faulted in first, or the program's own), dropped,
  // unmapped, or outside the restored regions. (A userfaultfd server cannot
  // see reads of pages it has installed, so prefetched pages the program
  // never touches are not counted here; `bench restore` counts them
  // against its known access pattern.)
  uint64_t prefetch_waste_entries = 0;
  // Bytes installed with UFFDIO_COPY, by the path that installed them (their
  // sum is bytes_copied): demand windows, stream read-ahead on the demand
  // thread, the prefetch list, other background fill.
  uint64_t bytes_demand = 0, bytes_readahead = 0, bytes_prefetch = 0, bytes_background = 0;
  uint64_t pages_readahead = 0;  // of pages_demand: installed by stream read-ahead
};

struct RestoreOptions {
  FillPolicy fill;
  // When every page is resident: close the userfaultfd (the kernel then
  // unregisters the ranges; everything is in place, so nothing changes for
  // the program) and stop serving. Keep true unless you need the events.
  bool release_when_resident = true;
  // Called once, on an internal thread, when every page is resident (or the
  // restore failed: stats say so). Must not block or destroy the restore.
  std::function<void(const Status&, const RestoreStats&)> on_resident;
};

class LazyRestore {
 public:
  // Maps (or adopts) the regions, registers them, and starts serving.
  // Each Region gives address (0: map fresh anonymous memory), length and
  // offset (in the source's flat view), all page aligned; the other fields
  // are ignored. On return the regions may be used at once. Errors: a bad
  // fill policy or invalid regions (unaligned, outside the source:
  // kInvalidArgument), userfaultfd missing or lacking the EVENT_* features
  // (kNotSupported / kPermissionDenied), mapping or registration failures.
  // On error nothing stays mapped or registered (mappings the caller gave
  // are left as they were).
  static Result<std::unique_ptr<LazyRestore>> Start(std::shared_ptr<const PageSource> source,
                                                    std::vector<Region> regions,
                                                    const RestoreOptions& options = {});

  // Finish()es (so no page is ever left to read as zero), then stops, then
  // unmaps the memory LazyRestore mapped (regions given with address 0)
  // unless Release() was called. Mappings the caller gave stay.
  virtual ~LazyRestore() = default;
  LazyRestore(const LazyRestore&) = delete;
  LazyRestore& operator=(const LazyRestore&) = delete;

  // The regions with their addresses (fresh mappings filled in).
  virtual const std::vector<Region>& regions() const = 0;
  virtual char* data(size_t region) const = 0;

  // Hands the mappings LazyRestore made to the caller, who then owns them
  // (munmap them once the restore is resident or destroyed): destruction
  // no longer unmaps them. Serving goes on. Idempotent.
  virtual void Release() = 0;

  // Waits until every page of every served address space (the program and
  // any forked children) is resident. OK when resident; kTimeout when
  // `timeout` expired first; the restore's error if it failed.
  virtual Status WaitResident(Duration timeout = kNoTimeout) = 0;
  virtual bool resident() const = 0;

  // WaitResident(kNoTimeout), then stops serving (closing the
  // userfaultfds). Returns the first error the restore met (OK if none).
  // Idempotent.
  virtual Status Finish() = 0;

  virtual RestoreStats stats() const = 0;
  // The demand faults recorded so far (FillPolicy::record_trace), for
  // WriteTrace().
  virtual WorkingSetTrace trace() const = 0;

 protected:
  LazyRestore() = default;
};

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_RESTORE_H_
