// Live snapshots: an image of memory regions at one instant while the
// process keeps writing to them.
//
// Mechanism (synchronous userfaultfd write-protect):
//   1. Start() registers every region with a userfaultfd in write-protect
//      mode and write-protects every page, populated or not. The end of that
//      step is the snapshot instant T; Start() returns right after it.
//   2. A background saver copies pages in address order, 64 at a time,
//      straight into the image writer's staging buffers (reading a
//      protected page is allowed), lifts the protection of each page once it
//      is copied, so writers stop faulting on it, and hands the buffers to
//      the writer's pipeline, whose helper threads hash, compress and write
//      them (ImageWriteOptions::threads).
//   3. A fault-handler thread serves writers that hit a page not yet saved:
//      it copies that page (and, while there is room, its not yet saved
//      neighbours) into a bounded spill area first - a memcpy, never image
//      I/O - then unprotects it and wakes the writer. The saver moves spilled
//      pages on to the writer in large batches before each step. Every page
//      is saved exactly once (atomic claims), so the image equals memory at
//      T.
// The writer never waits for image I/O, only for one page copy (plus the
// handler's wake-up) - unless the spill area is full (the writer's pipeline
// is slower than the writers' first writes): then the fault waits until
// the saver has moved spilled pages into the writer's staging buffers.
//
// Tracker mode (LiveSnapshotOptions::tracker): the regions are already
// tracked by a uffd-wp Tracker (TrackBackend::kUffdWp). Start() calls the
// tracker's Collect() - that is T; what that Collect() reports is dropped,
// the full image supersedes it - and installs a fault hook on the tracker
// so that each page is saved before its first write after T; the saver does
// not lift protection (the tracker owns it). When the snapshot is done the
// tracker's next Collect() reports exactly the pages written since T, which
// makes the live image the base of incremental layers (ImageWriteOptions::
// parent = this image). While the snapshot runs, the tracker also tracks
// one private page of the snapshot's (a sentinel that orders hook calls
// against Collect(); it is untracked at the end) and its fault hook is the
// snapshot's (any hook set before is replaced and removed at the end).
// Do not call the tracker from the progress callback.
//
// What T covers: writes through the registered mappings. Writes that do not
// fault through them are not held back: write(2)/DMA into the regions, or
// writes to a memfd through another mapping or its file descriptor.
// MADV_DONTNEED / munmap / mremap of a region during the snapshot is not
// supported. Regions must not hold the snapshot's own memory (its buffers,
// the image writer's, the progress callback's data).
//
// Never-populated pages are read like the others: anonymous holes map the
// shared zero page (no memory is used) and the image stores them as zero
// pages; holes of a memfd are allocated by the read (the kernel has no
// zero-page mapping for MAP_SHARED), which costs memory for sparse memfds.
// (PAGEMAP_SCAN cannot tell a write-protected hole from a swapped or
// migrating page, so skipping holes without reading is not done.)
//
// If writing the image fails (ENOSPC, EIO, ...) or the snapshot is
// cancelled, all protection is lifted, every blocked writer is woken, the
// temporary image file is removed and Wait() returns the error.
//
// Thread safety: LiveSnapshot methods may be called from any thread;
// progress() and stats() are safe concurrently with the snapshot. The
// progress callback runs on the saver thread: it must be quick and must not
// call Wait() or destroy the snapshot.
#ifndef PAGEWISE_LIVE_H_
#define PAGEWISE_LIVE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/image.h"
#include "pagewise/status.h"
#include "pagewise/tracker.h"

namespace pagewise {
PAGEWISE_API_BEGIN

struct LiveProgress {
  uint64_t pages_saved = 0;  // pages recorded in the image so far
  uint64_t pages_total = 0;  // pages in all regions
  bool done = false;         // the last call: the snapshot finished (OK or not)
};

using LiveProgressFn = std::function<void(const LiveProgress&)>;

struct LiveSnapshotOptions {
  // Image settings. `image.parent` must be empty (a live snapshot is a full
  // image).
  ImageWriteOptions image;
  // Tracker mode: a tracker created with TrackBackend::kUffdWp that tracks
  // every region. Not owned; must outlive the snapshot. nullptr: the
  // snapshot registers its own userfaultfd.
  Tracker* tracker = nullptr;
  // Called on the saver thread about every `progress_every_pages` pages and
  // once more at the end (done = true).
  LiveProgressFn progress;
  uint64_t progress_every_pages = 4096;
  // Fault-around (base mode): a write fault saves and unprotects the not yet
  // saved pages of the aligned group of this many pages around the faulting
  // page (a power of two, 1..64), so that writers fault up to that many
  // times less - while the spill area is at most half full; beyond that a
  // fault saves its own page only. 1: the faulting page only. Tracker mode
  // always uses 1 (the tracker must see every first write).
  size_t fault_around_pages = 64;
  // Pages the background saver copies per step (rounded up to a multiple of
  // 64), between which it drains the spill area. Writers hitting a page of
  // the 64 being copied wait for that copy.
  size_t chunk_pages = 256;
  // The spill area: most page copies the fault path may hold for the saver
  // (memory bound: fault_queue_pages * page size, allocated up front but
  // touched only as used), further capped at 1/16 of the snapshot's pages
  // (at least 64). When it is full, a faulting writer waits until the saver
  // has moved spilled pages on to the image writer.
  size_t fault_queue_pages = 8192;
  // Added to the background saver thread's nice value (0: leave as is).
  // The saver is bulk work (copy, compress, write) that competes for CPU
  // with the writers and with the fault thread, which releases them: a
  // positive value keeps the saver from delaying the fault thread, so
  // writer stalls stay short on a busy machine, at some cost in total
  // snapshot time. Needs no privilege; a failure is ignored (scheduling
  // only).
  int saver_nice = 5;
};

struct LiveSnapshotStats {
  uint64_t pages_total = 0;
  uint64_t pages_background = 0;  // saved by the background saver
  uint64_t pages_by_fault = 0;    // saved by the fault path before a write
  uint64_t faults_handled = 0;    // write-protect faults served (all kinds)
  // Faults that found the spill area full and waited for the saver to make
  // room. Raise fault_queue_pages if this is common.
  uint64_t fault_queue_full = 0;
  // Fault service time: from reading the fault to waking the writer, for
  // faults that saved their page or found it saved. (Faults on a page the
  // saver was copying wait for the saver instead and are not timed.)
  uint64_t fault_service_max_ns = 0;
  uint64_t fault_service_p50_ns = 0;  // histogram bucket bounds (within 10%)
  uint64_t fault_service_p99_ns = 0;
  uint64_t protect_ns = 0;  // Start() until T (image created, regions registered, protected)
  uint64_t total_ns = 0;    // Start() until finished (image committed)
  // Peak memory held by the snapshot's own buffers: the spill area's page
  // copies and the claim bitmaps (the image writer's internal buffers -
  // index, dedup table, its few staging and chunk buffers - are not
  // included).
  uint64_t peak_extra_bytes = 0;
};

class LiveSnapshot {
 public:
  // Starts a live snapshot of `regions` into an image at `path` and returns
  // once T has passed (every page protected, or the tracker collected).
  // Region fields: address/length page aligned, page_size the system
  // page size (hugetlbfs is not supported), kind kAnonymous (private
  // anonymous, THP or not) or kShared (memfd/shmem); regions must not
  // overlap. They become the image's regions in this order.
  // Errors: kInvalidArgument (bad regions or options), kNotSupported (the
  // kernel lacks uffd write-protect features, or kFile memory), errors
  // creating the image or registering the ranges. On error nothing is left
  // registered or protected and no file is left behind.
  static Result<std::unique_ptr<LiveSnapshot>> Start(const std::string& path,
                                                     const std::vector<Region>& regions,
                                                     const LiveSnapshotOptions& options = {});

  // Cancels an unfinished snapshot (as Cancel()) and waits for its threads.
  virtual ~LiveSnapshot() = default;
  LiveSnapshot(const LiveSnapshot&) = delete;
  LiveSnapshot& operator=(const LiveSnapshot&) = delete;

  // Blocks until the snapshot finished; returns OK once the image is
  // committed at `path`, else the error (the image is then absent and all
  // protection lifted). May be called repeatedly; returns the same status.
  virtual Status Wait() = 0;

  // Asks an unfinished snapshot to stop: Wait() then returns
  // kFailedPrecondition ("cancelled"), with protection lifted and no image.
  // No effect once finished.
  virtual void Cancel() = 0;

  // Current progress (safe from any thread at any time).
  virtual LiveProgress progress() const = 0;
  // Current counters; final once Wait() returned.
  virtual LiveSnapshotStats stats() const = 0;

 protected:
  LiveSnapshot() = default;
};

// Start() + Wait(): takes a live snapshot and returns its statistics.
Result<LiveSnapshotStats> TakeLiveSnapshot(const std::string& path,
                                           const std::vector<Region>& regions,
                                           const LiveSnapshotOptions& options = {});

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_LIVE_H_
