// The mprotect backend's fault path (mprotect.cc explains the backend and
// the invariant that loses no write): the process-wide table of published
// ranges, the SIGSEGV handler that serves first writes to them, and the
// opener that write-faults read(2) destinations (kernel_writes.h).
//
// The handler and the opener read the table without locks: a range is
// published (PublishRange) before its pages are made read-only, and
// UnpublishRange returns only once no handler or opener can still be reading
// it, so its memory may then be freed.
//
// Thread safety: the table functions are called by the one mprotect tracker
// of the process (mprotect.cc's singleton), under its lock; SegvHandler and
// OpenForKernelWrite run on any thread at any time, are async-signal-safe and
// neither allocate nor lock. InstallFaultHandler/RemoveFaultHandler are for
// the tracker's construction and destruction.
#ifndef PAGEWISE_TRACK_MPROTECT_FAULT_H_
#define PAGEWISE_TRACK_MPROTECT_FAULT_H_

#include <cstddef>
#include <cstdint>

#include "pagewise/status.h"
#include "sys/env.h"
#include "track/track_internal.h"

namespace pagewise::track_internal {

// How many ranges the table holds.
inline constexpr size_t kMaxMprotectRanges = 1024;

// One tracked range, read by the signal handler without locks.
struct MpRange {
  uint64_t start = 0, end = 0;
  PageBitmap bits;     // written since the last collect
  PageBitmap scratch;  // Collect's working set
  // The protection the program asked for, per page (from /proc/self/maps at
  // Track, then from its mprotect calls). Own mapping; atomic byte access.
  uint8_t* user_prot = nullptr;
  size_t prot_bytes = 0;
  Env* env = nullptr;

  ~MpRange() {
    if (user_prot != nullptr) env->Munmap(user_prot, prot_bytes).IgnoreError();  // nothing to do
  }
  int Prot(size_t page) const { return __atomic_load_n(&user_prot[page], __ATOMIC_ACQUIRE); }
  void SetProt(size_t page, int prot) {
    __atomic_store_n(&user_prot[page], static_cast<uint8_t>(prot), __ATOMIC_RELEASE);
  }
};

// ---- the table of published ranges -------------------------------------------
// An empty slot of the table, or kMaxMprotectRanges when every slot holds a
// range.
size_t FreeMprotectSlot();
// Publishes `r` (not owned; it must stay alive until UnpublishRange(r)
// returns) in `slot`, an empty slot from FreeMprotectSlot(): from now on the
// handler serves faults on it.
void PublishRange(size_t slot, MpRange* r);
// Empties the slots holding `r`, then waits until no handler or opener that
// may have seen it is still running. Afterwards `r` may be destroyed.
void UnpublishRange(MpRange* r);
// Tells OpenForKernelWrite that every slot is empty (it then scans nothing).
// Call only when no range is published.
void ForgetMprotectSlots();
// Write faults the handler served since the process started.
uint64_t MprotectFaultsServed();

// ---- the SIGSEGV handler --------------------------------------------------------
// Installs SegvHandler for SIGSEGV unless it is installed, remembering the
// disposition it replaces: faults the handler does not serve go there.
// Errors: sigaction(2)'s (nothing installed then).
Status InstallFaultHandler();
// Puts the remembered disposition back, unless another handler replaced ours
// meanwhile (ours then stays, still chaining, harmlessly). Best effort.
void RemoveFaultHandler();

// The KernelWriteOpener (kernel_writes.h) for published ranges: see
// mprotect_fault.cc. Async-signal-safe; returns how many pages it opened.
size_t OpenForKernelWrite(uint64_t start, uint64_t end);

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_MPROTECT_FAULT_H_
