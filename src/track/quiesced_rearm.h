// QuiescedRearm: an internal extension of a Tracker for callers whose
// writers are QUIESCED (Checkpoint::Rewind): report the written pages
// without re-arming them, let the caller write those pages itself while they
// are still unprotected (no write-protect faults), then re-arm exactly them.
//
// Why this is separate from Collect(): Collect() reports and re-arms each
// page in one atomic step (PM_SCAN_WP_MATCHING), which is what makes it
// lose no write while other threads keep writing. PeekWritten() + Rearm()
// are two steps: a write landing between them on a page outside `written`
// would be missed forever, and one landing on a page of `written` would be
// re-armed without being reported. They are correct ONLY while nobody but
// the caller writes the tracked memory from PeekWritten() until Rearm()
// returns.
//
// Which trackers offer it: the uffd-wp-async backend (dynamic_cast a
// Tracker* to QuiescedRearm*; nullptr for the other backends, whose callers
// keep using Collect()).
//
// Thread safety: as the Tracker's own methods (serialised with them); the
// quiescence precondition above is the caller's.
#ifndef PAGEWISE_TRACK_QUIESCED_REARM_H_
#define PAGEWISE_TRACK_QUIESCED_REARM_H_

#include <vector>

#include "pagewise/status.h"
#include "pagewise/tracker.h"

namespace pagewise::track_internal {

class QuiescedRearm {
 public:
  virtual ~QuiescedRearm() = default;

  // Appends to *written (sorted and coalesced from its old size on) the
  // pages written since they were last re-armed, as Collect() would, but
  // leaves them written (unprotected). Precondition: writers quiesced, and
  // they stay quiesced until Rearm(). Errors as Collect(): a tracked range
  // no longer registered is kFailedPrecondition (checked before scanning,
  // so an unregistered mapping is never reported as written); on any error
  // nothing was re-armed, so nothing is lost: pages already appended are
  // reported again by the next scan, except those remembered from madvise
  // drops, which the caller must keep if it does not finish (they are in
  // *written).
  virtual Status PeekWritten(std::vector<PageRange>* written) = 0;

  // Write-protects exactly `ranges` (sorted, coalesced, inside the tracked
  // ranges; normally what PeekWritten() reported, after the caller wrote
  // them), including ptes the caller emptied with MADV_DONTNEED. Chooses
  // per range UFFDIO_WRITEPROTECT or one scan with WP_MATCHING over a
  // tracked range, whichever it measured cheaper. Same precondition. On
  // error some ranges may be left unprotected: they are reported written by
  // the next PeekWritten()/Collect(), so again nothing is lost.
  virtual Status Rearm(const std::vector<PageRange>& ranges) = 0;

  // How Rearm() write-protects: the cheaper way as measured (default), or
  // always one of the two (tests cover both with it).
  enum class RearmWay { kCheapest, kPerRange, kWholeScan };
  virtual void SetRearmWay(RearmWay way) = 0;
};

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_QUIESCED_REARM_H_
