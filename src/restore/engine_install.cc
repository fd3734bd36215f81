// Installer: the fill ioctls and the kernel's answers as control flow.
#include "restore/engine_install.h"

#include <algorithm>
#include <cerrno>
#include <optional>

#include "base/pause_point.h"
#include "pagewise/probe.h"

namespace pagewise::restore {
namespace {

// Removes filler `who`'s in-flight entry (the caller then notifies
// inflight_done). Requires s.mu.
void EndInFlight(Space& s, int who) {
  auto& v = s.inflight;
  v.erase(std::remove_if(v.begin(), v.end(), [&](const InFlight& f) { return f.owner == who; }),
          v.end());
}

}  // namespace

int Installer::EnoentPatience(const Space& s) const {
  // With EVENT_UNMAP and EVENT_REMAP every disappearance of a registered
  // mapping is announced (exit shows as ESRCH instead), so keep waiting for
  // the event (about 5 s of backoff before giving up). Without them, or
  // when the features are unknown (a server's client), give up quickly.
  const uint64_t both = uffd_feature::kEventUnmap | uffd_feature::kEventRemap;
  return (s.uffd.features() & both) == both ? 5000 : 64;
}

bool Installer::Install(Space& s, const Run& run, const char* data, const uint8_t* zero,
                        FillKind kind, int who, size_t first, size_t max_piece,
                        bool yield_to_reads) {
  if (run.pages == 0) return false;
  first = std::min(first, run.pages - 1);
  // The piece holding `first` starts at the first page before it with the
  // same zero-ness, so that it goes out as one ioctl.
  size_t lo = first;
  while (lo > 0 && zero[lo - 1] == zero[first] && first - lo + 1 < max_piece) --lo;
  bool waited =
      InstallRange(s, run, data, zero, kind, who, lo, run.pages, max_piece, yield_to_reads);
  if (lo > 0) {
    waited |= InstallRange(s, run, data, zero, kind, who, 0, lo, max_piece, yield_to_reads);
  }
  return waited;
}

// One loop over the pieces of [lo, hi), with every kernel answer handled in
// place: split up, each case would need the piece's state passed around.
bool Installer::InstallRange(Space& s, const Run& run, const char* data, const uint8_t* zero,
                             FillKind kind, int who, size_t lo, size_t hi, size_t max_piece,
                             bool yield_to_reads) {
  const size_t ps = ps_;
  bool read_waited = false;
  int spins = 0;
  int enoent_waits = 0;
  FillHold hold(s.gate);
  size_t i = lo;
  while (i < hi) {
    uint64_t addr;
    size_t n;
    {
      std::lock_guard<std::mutex> lk(s.mu);
      if (s.closed.load() || !s.uffd.valid()) return read_waited;
      // Re-validate: since the run was planned its pages may have been
      // filled (by another filler), dropped, moved or unmapped.
      n = std::min(s.map.UnfilledPrefix(run.addr + i * ps, run.src + i * ps, hi - i), max_piece);
      for (size_t k = 1; k < n; ++k) {
        if (zero[i + k] != zero[i]) {
          n = k;
          break;
        }
      }
      addr = run.addr + i * ps;
      if (n > 0 && s.InFlightOverlaps(addr, n, ps, who)) {
        // Someone else installs (part of) it: leave that to them.
        size_t k = 0;
        while (k < n && !s.InFlightOverlaps(addr + k * ps, 1, ps, who)) ++k;
        n = k;
      }
      if (n == 0) {
        // A prefetch entry whose page got in place since it was planned (a
        // fault or read-ahead was first) is waste, as one found in place at
        // planning is: every entry counts as installed or as waste.
        if (kind == FillKind::kPrefetch) stats_->Add(&RestoreStats::prefetch_waste_entries);
        ++i;
        continue;
      }
      s.inflight.push_back({addr, n, who});
    }
    const uint64_t len = n * ps;
    // Negative control (explore --variant fill-past-remove): leave the gate
    // during the ioctl. The real code keeps it (see "Ordering" in engine.h).
    if (PW_TESTING_VARIANT(kFillPastRemove)) hold.Release();
    PW_PAUSE_POINT("engine.fill.ioctl");  // pagewise explore (base/pause_point.h)
    const FillResult r =
        zero[i] ? s.uffd.Zeropage(addr, len) : s.uffd.Copy(addr, data + i * ps, len);
    if (PW_TESTING_VARIANT(kFillPastRemove)) hold.Reacquire();
    const size_t done = static_cast<size_t>(std::min<uint64_t>(r.bytes, len) / ps);
    const uint64_t at = addr + done * ps;  // where the kernel stopped
    {
      std::lock_guard<std::mutex> lk(s.mu);
      EndInFlight(s, who);
      if (done > 0) s.map.Set(addr, done, PageState::kFilled);
      if (r.ok() && done == 0) {  // success without progress would loop forever
        host_->Fail(Status::Internal("userfaultfd fill reported success without progress"));
        s.map.Set(addr, 1, PageState::kBad);
      } else if (!r.ok() && r.error == EEXIST) {
        // A page is already mapped there: another fill got there first, or
        // the program's own page in a mapping it handed us. Its content is
        // authoritative.
        s.map.Set(at, 1, PageState::kFilled);
      } else if (!r.ok() && r.error == ESRCH) {
        host_->MarkDeadLocked(s);  // the mm is gone: nothing left to serve
      } else if (!r.ok() && r.error != EAGAIN && r.error != ENOENT) {
        // ENOMEM, EFAULT, EINVAL...: the page cannot be installed. Mark it
        // bad so that an access is poisoned (SIGBUS), never a silent zero.
        s.map.Set(at, 1, PageState::kBad);
      }
      s.Sync();
    }
    s.inflight_done.notify_all();
    if (done > 0) stats_->Installed(kind, zero[i] != 0, done);
    i += done;
    if (r.ok()) {
      if (done == 0) ++i;
      if (yield_to_reads && s.gate.read_pending()) {
        // A read (a fault's, usually) waits for us: let it in.
        read_waited = true;
        hold.Release();
        hold.Reacquire();
      }
      continue;
    }
    switch (r.error) {
      case EEXIST:
        // The failed ioctl woke nobody: wake whoever waits on that page.
        s.uffd.Wake(at, ps).IgnoreError();  // nobody may be waiting: harmless
        stats_->Add(&RestoreStats::eexist_pages);
        ++i;
        break;
      case EAGAIN: {
        // Either a non-cooperative event (fork, mremap, madvise, munmap) is
        // pending and the kernel refuses to change the mm until we read it
        // (mmap_changing), or the kernel stopped after partial progress.
        // Read and apply pending events first (outside our shared hold:
        // reads are exclusive); the loop then retries only what is still
        // unfilled, re-checking every page (the range may have been
        // dropped, moved or unmapped by those events).
        stats_->Add(&RestoreStats::eagain_retries);
        hold.Release();
        const size_t read = host_->DrainEvents(s);
        if (read == 0 && done == 0) host_->Backoff(&spins);
        hold.Reacquire();
        break;
      }
      case ENOENT: {
        // No registered mapping at that address now. Usually an munmap or
        // mremap whose UNMAP/REMAP event is on its way: the kernel looks up
        // the mapping before it checks for pending events, so ENOENT can
        // come before the event is even queued. Marking the page gone now
        // would be wrong if it moved (REMAP would carry "gone" to its new
        // address, which would then read zeros). So read events and let
        // the loop re-check the page; only if no event explains it (a
        // client without EVENT_UNMAP/REMAP, or one that unregistered the
        // range) is the page forgotten.
        hold.Release();
        const size_t read = host_->DrainEvents(s);
        if (read == 0 && ++enoent_waits < EnoentPatience(s)) host_->Backoff(&spins);
        hold.Reacquire();
        if (read > 0 || enoent_waits < EnoentPatience(s)) break;
        enoent_waits = 0;
        {
          std::lock_guard<std::mutex> lk(s.mu);
          if (s.map.IsUnfilledWith(at, run.src + i * ps)) s.map.Set(at, 1, PageState::kGone);
          s.Sync();
        }
        if (s.uffd.valid()) s.uffd.Wake(at, ps).IgnoreError();  // nothing may wait: harmless
        stats_->Add(&RestoreStats::enoent_pages);
        ++i;
        break;
      }
      case ESRCH:
        return read_waited;
      default:
        host_->Fail(sys::FillStatus(r, zero[i] ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY", at, len));
        s.uffd.Wake(at, ps).IgnoreError();  // let it refault and be poisoned
        ++i;
        break;
    }
  }
  return read_waited;
}

void Installer::MarkBad(Space& s, const Run& run) {
  std::lock_guard<std::mutex> lk(s.mu);
  for (size_t i = 0; i < run.pages; ++i) {
    if (s.map.IsUnfilledWith(run.addr + i * ps_, run.src + i * ps_)) {
      s.map.Set(run.addr + i * ps_, 1, PageState::kBad);
    }
  }
  s.Sync();
}

void Installer::AfterEagain(Space& s, GateUse gate) {
  int spins = 0;
  const size_t read =
      gate == GateUse::kHeldExclusive ? host_->DrainEventsHeld(s) : host_->DrainEvents(s);
  if (read == 0) host_->Backoff(&spins);
}

bool Installer::ZeroOrWake(Space& s, uint64_t page) {
  FillResult r;
  {
    FillHold hold(s.gate);
    if (s.closed.load() || !s.uffd.valid()) return false;
    r = s.uffd.Zeropage(page, ps_);
    if (r.ok()) {
      stats_->Add(&RestoreStats::zero_pages);
      return false;
    }
    switch (r.error) {
      case EEXIST:  // resolved before we read the fault: just wake the thread
      case ENOENT:  // no registered mapping now: wake it to see what the program did
        s.uffd.Wake(page, ps_).IgnoreError();  // the thread may be gone: harmless
        return false;
      case EAGAIN:
        break;  // below, outside the hold
      case ESRCH: {
        std::lock_guard<std::mutex> lk(s.mu);
        host_->MarkDeadLocked(s);
        return false;
      }
      default:
        host_->Fail(sys::FillStatus(r, "UFFDIO_ZEROPAGE", page, ps_));
        s.uffd.Wake(page, ps_).IgnoreError();  // best effort: the fill failed
        return false;
    }
  }
  // An event is pending: apply it, then let the caller look again (it may
  // have moved source data to this address).
  AfterEagain(s, GateUse::kTakeShared);
  return true;
}

bool Installer::Poison(Space& s, uint64_t page, GateUse gate) {
  // The source failed for this page: make the access fail loudly (SIGBUS)
  // rather than read zeros. Needs UFFDIO_POISON (Linux 6.6); without it the
  // thread stays blocked, which is still not a silent zero.
  FillResult r;
  {
    std::optional<FillHold> hold;
    if (gate == GateUse::kTakeShared) hold.emplace(s.gate);
    if (!s.uffd.valid()) return false;
    r = s.uffd.Poison(page, ps_);
    if (r.ok()) {
      stats_->Add(&RestoreStats::poisoned_pages);
      return false;
    }
    switch (r.error) {
      case EAGAIN:
        break;      // below, outside a shared hold
      case EEXIST:  // resolved meanwhile
      case ENOENT:  // no mapping there now: let the thread see what the program did
        s.uffd.Wake(page, ps_).IgnoreError();  // the thread may be gone: harmless
        return false;
      case ESRCH: {
        std::lock_guard<std::mutex> lk(s.mu);
        host_->MarkDeadLocked(s);
        return false;
      }
      default:
        host_->Fail(sys::FillStatus(r, "UFFDIO_POISON", page, ps_));
        return false;
    }
  }
  AfterEagain(s, gate);
  return true;
}

}  // namespace pagewise::restore
