// Installer: how bytes become pages in a space. The one place that issues
// the fill ioctls (UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_POISON, and
// UFFDIO_WAKE after a fill that woke nobody), at the space's page
// granularity, and turns the kernel's answers into page states:
//
//   partial progress  the pages done are filled; the rest is retried
//   EAGAIN            an event is pending (mmap_changing) or the kernel
//                     stopped early: read and apply events, re-validate,
//                     retry only what is still unfilled
//   EEXIST            already present: filled (and woken: the failed ioctl
//                     woke nobody)
//   ENOENT            no registered mapping now: read events (a REMAP or
//                     UNMAP is usually on its way) and re-check; forgotten
//                     (kGone) only if no event explains it
//   ESRCH             the mm is gone: the space is dead
//   anything else     the page is bad (poisoned on access), the restore fails
//
// Every install follows the FillGate protocol (engine_space.h): it holds
// the gate shared from validating a piece against the SpaceMap until the
// ioctl returned and the map was updated, and marks the piece in flight so
// that no other filler installs it twice and a fault on it waits for it.
//
// What kinds of memory add here (hugetlbfs: whole huge pages per ioctl, no
// ZEROPAGE; shmem MINOR: UFFDIO_CONTINUE of page-cache pages; THP:
// UFFDIO_MOVE of whole huge pages): the unit is `granularity` bytes and
// the choice of ioctl is InstallPiece's.
//
// Thread safety: any number of threads may install into the same space at
// once (that is the point of the gate); the InstallHost callbacks must be
// safe from any engine thread.
#ifndef PAGEWISE_RESTORE_ENGINE_INSTALL_H_
#define PAGEWISE_RESTORE_ENGINE_INSTALL_H_

#include <cstddef>
#include <cstdint>

#include "pagewise/status.h"
#include "restore/engine_schedule.h"
#include "restore/engine_space.h"
#include "restore/engine_stats.h"
#include "sys/env.h"

namespace pagewise::restore {

// What the installer needs from the engine around it.
class InstallHost {
 public:
  virtual ~InstallHost() = default;
  // Reads and applies the pending messages of `s` (taking its gate
  // exclusive: the caller must not hold it). Returns how many were read.
  virtual size_t DrainEvents(Space& s) = 0;
  // The same with the gate already held exclusive by the caller.
  virtual size_t DrainEventsHeld(Space& s) = 0;
  // Waits a little after an EAGAIN/ENOENT that reading explained nothing
  // (the event's thread must run first); *spins counts the calls.
  virtual void Backoff(int* spins) = 0;
  // Records the restore's first error.
  virtual void Fail(const Status& status) = 0;
  // Requires s.mu: the mm is gone.
  virtual void MarkDeadLocked(Space& s) = 0;
};

// Whether the caller already holds the space's gate exclusive (closing a
// space) or the installer takes it shared itself.
enum class GateUse { kTakeShared, kHeldExclusive };

class Installer {
 public:
  Installer(InstallHost* host, StatsRecorder* stats, size_t page_size)
      : host_(host), stats_(stats), ps_(page_size) {}

  size_t granularity() const { return ps_; }

  // Installs the pages of `run` that are still unfilled with the same
  // source offsets and not in flight by another filler. data holds the
  // run's bytes, zero[i] marks pages to install as zero. `first` (an index
  // into the run) is installed first, so the faulting page of a demand run
  // is in place before the rest of its window. Pieces are at most
  // `max_piece` pages; with `yield_to_reads` the gate is left between
  // pieces while a read waits (background fill never holds a fault's read
  // up for more than one piece). `who` identifies the filler (InFlight).
  // Returns true if a read had to wait for one of the pieces.
  bool Install(Space& s, const Run& run, const char* data, const uint8_t* zero, FillKind kind,
               int who, size_t first, size_t max_piece, bool yield_to_reads);

  // The source could not give `run`: its pages that are still unfilled
  // with the same source offsets become bad (a fault on them is poisoned,
  // never zero-filled).
  void MarkBad(Space& s, const Run& run);

  // A fault on a page we do not fill from the source: installs a zero page
  // or wakes the thread. Returns true if events were applied meanwhile and
  // the caller must look again.
  bool ZeroOrWake(Space& s, uint64_t page);
  // Poisons a page the source could not give (SIGBUS on access). Returns
  // true if the caller must look again.
  bool Poison(Space& s, uint64_t page, GateUse gate);

 private:
  // Installs pages [lo, hi) of the run; see Install.
  bool InstallRange(Space& s, const Run& run, const char* data, const uint8_t* zero, FillKind kind,
                    int who, size_t lo, size_t hi, size_t max_piece, bool yield_to_reads);
  // How many unexplained ENOENTs to wait out before forgetting a page.
  int EnoentPatience(const Space& s) const;
  // Handles an EAGAIN of a fill that is not an install (zero, poison).
  void AfterEagain(Space& s, GateUse gate);

  InstallHost* host_;
  StatsRecorder* stats_;
  size_t ps_;
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_INSTALL_H_
