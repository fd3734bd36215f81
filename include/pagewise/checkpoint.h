// In-process checkpoint and rewind of memory regions.
//
// Checkpoint::Create(regions) saves the regions' current contents and starts
// a Tracker on them. Rewind() puts back exactly the pages written since the
// checkpoint (found by Tracker::Collect, not by comparing or copying
// everything), including pages dropped with MADV_DONTNEED, and may be called
// any number of times: each call returns the regions to the same saved
// state. Update() moves the checkpoint to the current contents, copying only
// the pages written since.
//
// Cost: with the uffd-wp-async backend a Rewind reads the written state
// without re-arming it (one PAGEMAP_SCAN per region), copies the saved pages
// back while they are still writable (no write-protect faults) and then
// re-arms exactly those pages - the quiescence precondition below is what
// makes those separate steps safe. Other backends collect, copy and collect
// again.
//
// The saved copy is sparse: pages that are unpopulated or all-zero at the
// checkpoint are not copied (a bitmap remembers them) and are put back by
// MADV_DONTNEED (kAnonymous regions) or by zero-filling (other kinds); only
// non-zero pages occupy memory in the saved copy.
//
// Thread safety: a Checkpoint is used from one thread at a time. Create,
// Rewind and Update require the caller to QUIESCE every thread that writes
// the regions for the duration of the call: a write racing them is
// undefined (it may survive the rewind, be undone, or tear a page), and
// Rewind re-arms the tracker after its own writes on the assumption that no
// one else wrote meanwhile. Between calls, any thread may write freely.
#ifndef PAGEWISE_CHECKPOINT_H_
#define PAGEWISE_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/image.h"
#include "pagewise/status.h"
#include "pagewise/tracker.h"

namespace pagewise {
PAGEWISE_API_BEGIN

struct CheckpointOptions {
  TrackBackend backend = TrackBackend::kAuto;
  // Ask PAGEMAP_SCAN which pages of kAnonymous regions are unpopulated so
  // that Create does not read (and populate) them.
  bool skip_unpopulated = true;
};

struct RewindStats {
  uint64_t pages_restored = 0;  // pages reported written and put back
  uint64_t pages_copied = 0;    // ... of which copied from the saved copy
  uint64_t pages_zeroed = 0;    // ... of which zero at the checkpoint
  uint64_t elapsed_ns = 0;      // wall time of the Rewind call
};

struct CheckpointStats {
  uint64_t region_pages = 0;  // pages covered by the checkpoint
  uint64_t saved_pages = 0;   // non-zero pages held in the saved copy
  uint64_t rewinds = 0;
  uint64_t updates = 0;
  RewindStats last_rewind;
  uint64_t total_pages_restored = 0;
};

class Checkpoint {
 public:
  // Tracks `regions` and saves their contents. Preconditions: regions page
  // aligned, non-empty, non-overlapping, mapped read-write, page_size ==
  // PageSize(), not tracked by another Tracker; kind describes the mapping
  // (kAnonymous = MAP_PRIVATE|MAP_ANONYMOUS: zero pages are put back with
  // MADV_DONTNEED). Writers quiesced. Errors: kInvalidArgument for bad
  // regions, the Tracker's errors (kNotSupported for untrackable memory),
  // kResourceExhausted when the saved copy cannot be mapped. On error
  // nothing stays tracked or allocated.
  static Result<std::unique_ptr<Checkpoint>> Create(const std::vector<Region>& regions,
                                                    const CheckpointOptions& options = {});

  // Stops tracking and frees the saved copy. The regions keep their
  // current contents.
  virtual ~Checkpoint() = default;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // Puts back every page written since the checkpoint (or since the
  // previous Rewind/Update, which left the regions equal to the
  // checkpoint). Precondition: writers quiesced. Errors: the Tracker's
  // Collect errors or madvise failures; pages reported before the error are
  // still put back, and the regions may then hold a mix of old and new
  // pages: call Rewind() again (it picks up what was missed) before using
  // them.
  virtual Result<RewindStats> Rewind() = 0;

  // Makes the current contents the checkpoint: copies the pages written
  // since the last Rewind/Update into the saved copy. Returns the number of
  // pages taken. Precondition: writers quiesced. Errors as Rewind; after an
  // error the saved state is a mix: call Update() again before Rewind().
  virtual Result<uint64_t> Update() = 0;

  virtual CheckpointStats stats() const = 0;
  virtual TrackBackend backend() const = 0;
  virtual const std::vector<Region>& regions() const = 0;

 protected:
  Checkpoint() = default;
};

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_CHECKPOINT_H_
