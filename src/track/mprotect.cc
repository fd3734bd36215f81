// Backend mprotect: tracked pages are kept PROT_READ; the first write to a
// page raises SIGSEGV, whose handler makes the page writable again and
// records it. No userfaultfd needed.
//
// Why no write is lost. Invariant: a tracked page is writable only if its
// bit is set, or a handler for it is between its mprotect and its bit-set.
//   handler:  mprotect(page, user's protection), THEN set the page's bit.
//   Collect:  exchange every bitmap word with 0 (the collected set), THEN
//             mprotect the whole range back to read-only, then report.
// A write to a page that Collect's exchange did not take either faults
// (the page is read-only) or lands while a handler for it is in flight; that
// handler sets the bit after its mprotect, i.e. after the write became
// possible, so the next collect reports the page. A write that lands between
// the exchange and the re-protect hits a page the exchange took (its bit was
// set, or it was read-only and faulted): this collect reports it, and callers
// read pages after Collect returns, so they see the write. Re-protecting the
// whole range with one mprotect (not page by page) lets the kernel merge the
// VMAs that per-page unprotects split, so the VMA count stays bounded
// (vm.max_map_count is 65530 by default).
//
// The program's own mprotect(2) and madvise(2) would break the invariant:
// mprotect(PROT_WRITE) makes unwritten pages writable without a fault, and
// MADV_DONTNEED zeroes pages without a write. While this backend is active,
// libpagewise-interpose's mprotect (memory_events.h; without that library
// linked or preloaded this backend is unavailable) routes the program's
// mprotect calls on tracked pages here: the requested protection is recorded
// per page as "the user's protection", and applied without PROT_WRITE; the
// fault handler later grants the user's protection to a written page, and a
// write to a page whose user protection lacks PROT_WRITE is a genuine fault
// passed on to the previously installed SIGSEGV handler. madvise calls that
// drop pages mark them written.
//
// The fault path (the table of published ranges the handler reads without
// locks, the SIGSEGV handler, the read(2) destination opener) is
// mprotect_fault.cc; this file is the tracker: Track, Untrack, Collect and
// the interposed mprotect/mremap calls.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <string>
#include <vector>

#include "sys/process.h"
#include "sys/raw_mm.h"
#include "track/kernel_writes.h"
#include "track/memory_events.h"
#include "track/mprotect_fault.h"
#include "track/track_internal.h"

namespace pagewise::track_internal {
namespace {

std::mutex g_singleton_mu;
bool g_singleton_exists = false;  // g_singleton_mu

constexpr int kEffectiveMask = ~PROT_WRITE;

class MprotectTracker final : public Tracker,
                              public MemoryEventListener,
                              public MprotectInterceptor {
 public:
  explicit MprotectTracker(Env* env)
      : env_(env), pid_(sys::SelfPid()), faults_base_(MprotectFaultsServed()) {}

  // Installs the handler (chaining to the current one) and the hooks.
  Status Install() {
    PW_RETURN_IF_ERROR(InstallFaultHandler());
    RegisterMemoryEventListener(this);
    InstallMprotectInterceptor(this);  // the singleton guarantees it is free
    SetKernelWriteOpener(OpenForKernelWrite);
    return Status::Ok();
  }

  ~MprotectTracker() override {
    SetKernelWriteOpener(nullptr);  // a call that loaded it finds no range below
    RemoveMprotectInterceptor(this);
    UnregisterMemoryEventListener(this);
    if (sys::SelfPid() == pid_) {
      std::lock_guard<std::mutex> lock(mu_);
      while (!ranges_.empty()) {
        UntrackLocked(ranges_.back(), /*force=*/true).IgnoreError();  // cannot fail when forced
        ranges_.pop_back();
      }
      ForgetMprotectSlots();  // every slot is empty now
    }
    // Put the previous handler back unless someone replaced ours meanwhile
    // (then ours stays, and keeps chaining, harmlessly).
    RemoveFaultHandler();
    std::lock_guard<std::mutex> lock(g_singleton_mu);
    g_singleton_exists = false;
  }

  TrackBackend backend() const override { return TrackBackend::kMprotect; }

  Status Track(void* addr, size_t len) override;
  Status Untrack(void* addr, size_t len) override;
  Status Collect(std::vector<PageRange>* written) override;

  TrackerStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    TrackerStats st = stats_;
    st.faults_handled = MprotectFaultsServed() - faults_base_;
    return st;
  }

  std::vector<PageRange> tracked() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return tracked_unlocked();
  }

  void OnDropped(uint64_t start, uint64_t end) override;
  int InterceptMprotect(void* addr, size_t len, int prot) override;
  void* InterceptMremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                        void* new_addr) override;

 private:
  Status CheckProcess(const char* op) const {
    if (sys::SelfPid() == pid_) return Status::Ok();
    return Status::FailedPrecondition(std::string(op) +
                                      ": this tracker belongs to the parent process; a forked "
                                      "child is not tracked");
  }
  // Applies "user protection minus PROT_WRITE" to every run of pages of r
  // with equal user protection in [first, last). Stops at the first error.
  Status ProtectRuns(MpRange* r, size_t first, size_t last, bool restore_user);
  // Restores the program's protection on r and unpublishes it. On failure
  // r stays published and protected, unless `force` (the destructor).
  Status UntrackLocked(const std::unique_ptr<MpRange>& r, bool force = false);
  Status RestoreLocked(const std::unique_ptr<MpRange>& r);
  std::vector<PageRange> tracked_unlocked() const {
    std::vector<PageRange> out;
    for (const auto& r : ranges_) out.push_back({r->start, r->end});
    std::sort(out.begin(), out.end(),
              [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
    return out;
  }

  Env* const env_;
  const pid_t pid_;
  const uint64_t faults_base_;
  mutable std::mutex mu_;  // serialises Track/Untrack/Collect/interposed calls
  std::vector<std::unique_ptr<MpRange>> ranges_;  // sorted by start
  TrackerStats stats_;
};

Status MprotectTracker::ProtectRuns(MpRange* r, size_t first, size_t last, bool restore_user) {
  const uint64_t pg = PageSize();
  for (size_t a = first; a < last;) {
    const int prot = r->Prot(a);
    size_t b = a + 1;
    while (b < last && r->Prot(b) == prot) ++b;
    const int apply = restore_user ? prot : (prot & kEffectiveMask);
    if (apply != prot || restore_user) {
      Status s = env_->Mprotect(reinterpret_cast<void*>(r->start + a * pg), (b - a) * pg, apply);
      if (!s.ok()) return s;
    }
    a = b;
  }
  return Status::Ok();
}

// Last resort when the Env refuses to restore protection: raw calls, run by
// run, ignoring failures (unmapped parts fail harmlessly).
void RawRestore(MpRange* r) {
  const uint64_t pg = PageSize();
  for (size_t a = 0; a < r->bits.pages();) {
    size_t b = a + 1;
    while (b < r->bits.pages() && r->Prot(b) == r->Prot(a)) ++b;
    sys::RawMprotect(reinterpret_cast<void*>(r->start + a * pg), (b - a) * pg, r->Prot(a));
    a = b;
  }
}

Status MprotectTracker::Track(void* addr, size_t len) {
  PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Track"));
  PW_RETURN_IF_ERROR(CheckProcess("Track"));
  const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
  const uint64_t pg = PageSize();
  std::lock_guard<std::mutex> lock(mu_);
  PW_RETURN_IF_ERROR(CheckNoOverlap(tracked_unlocked(), start, end));
  PW_ASSIGN_OR_RETURN(std::vector<Vma> vmas, CoveringVmas(env_, start, end, "Track"));
  PW_RETURN_IF_ERROR(
      TrackPageSize(env_, vmas, start, end, /*hugetlb_ok=*/false, "mprotect").status());
  const size_t slot = FreeMprotectSlot();
  if (slot == kMaxMprotectRanges) {
    return Status(Code::kResourceExhausted, 0,
                  "Track " + RangeString(start, end) + ": the mprotect backend tracks at most " +
                      std::to_string(kMaxMprotectRanges) + " ranges; merge adjacent ranges");
  }
  auto r = std::make_unique<MpRange>();
  r->start = start;
  r->end = end;
  r->env = env_;
  const size_t n = len / pg;
  PW_ASSIGN_OR_RETURN(r->bits, PageBitmap::Create(env_, n));
  PW_ASSIGN_OR_RETURN(r->scratch, PageBitmap::Create(env_, n));
  r->prot_bytes = (n + pg - 1) / pg * pg;
  PW_ASSIGN_OR_RETURN(void* prot_mem, env_->Mmap(nullptr, r->prot_bytes, PROT_READ | PROT_WRITE,
                                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  r->user_prot = static_cast<uint8_t*>(prot_mem);
  for (const Vma& v : vmas) {
    for (uint64_t a = v.start; a < v.end; a += pg) r->SetProt((a - start) / pg, v.prot);
  }
  // Give each private writable VMA its anon_vma now, with an atomic no-op
  // write (content unchanged, safe against concurrent writers). Otherwise
  // every page first written after a per-page unprotect gets an anon_vma of
  // its own, and VMAs with different anon_vmas never merge again: Collect's
  // whole-range mprotect could not undo the splits and the VMA count would
  // only grow (measured: 2048 VMAs for 1024 written pages of 2048).
  for (const Vma& v : vmas) {
    if ((v.prot & PROT_WRITE) && !v.shared) AtomicNoOpWrite(reinterpret_cast<void*>(v.start));
  }
  // Publish before protecting: the first fault must find the range.
  PublishRange(slot, r.get());
  Status s = ProtectRuns(r.get(), 0, n, /*restore_user=*/false);
  if (!s.ok()) {
    // Undo: give every page its protection back, then unpublish. A page
    // left read-only and unpublished would crash the program's next write.
    if (!ProtectRuns(r.get(), 0, n, /*restore_user=*/true).ok()) RawRestore(r.get());
    UnpublishRange(r.get());
    return s.WithContext("Track " + RangeString(start, end) + ": write-protecting the range");
  }
  auto pos =
      std::lower_bound(ranges_.begin(), ranges_.end(), start,
                       [](const std::unique_ptr<MpRange>& x, uint64_t s) { return x->start < s; });
  ranges_.insert(pos, std::move(r));  // sorted: InterceptMprotect walks it in order
  return Status::Ok();
}

Status MprotectTracker::UntrackLocked(const std::unique_ptr<MpRange>& r, bool force) {
  // Restore the program's protection first, unpublish after: a write fault
  // on a still read-only page must still find the range.
  Status s = RestoreLocked(r);
  if (!s.ok() && force) {
    // The destructor cannot keep the range: restore with raw calls and
    // unpublish regardless.
    RawRestore(r.get());
    s = Status::Ok();
  }
  if (!s.ok()) return s;
  UnpublishRange(r.get());  // returns once no handler can still be reading r
  return Status::Ok();
}

// Gives every page of r the program's protection back.
Status MprotectTracker::RestoreLocked(const std::unique_ptr<MpRange>& r) {
  Status s = ProtectRuns(r.get(), 0, r->bits.pages(), /*restore_user=*/true);
  if (!s.ok() && s.err() == ENOMEM) {
    // Part of it was unmapped meanwhile: restore what is still mapped.
    Result<std::vector<Vma>> maps = ReadMaps(env_);
    if (!maps.ok()) return maps.status().WithContext("Untrack");
    std::vector<PageRange> parts = {{r->start, r->end}};
    ClipToMapped(*maps, &parts);
    s = Status::Ok();
    for (const PageRange& p : parts) {
      Status ps = ProtectRuns(r.get(), (p.start - r->start) / PageSize(),
                              (p.end - r->start) / PageSize(), true);
      if (!ps.ok() && s.ok()) s = ps;
    }
  }
  return s;
}

Status MprotectTracker::Untrack(void* addr, size_t len) {
  PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Untrack"));
  PW_RETURN_IF_ERROR(CheckProcess("Untrack"));
  const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = ranges_.begin(); it != ranges_.end(); ++it) {
    if ((*it)->start != start || (*it)->end != end) continue;
    Status s = UntrackLocked(*it);
    if (!s.ok()) return s.WithContext("Untrack " + RangeString(start, end));
    ranges_.erase(it);
    return Status::Ok();
  }
  return NotTracked(start, end, tracked_unlocked());
}

Status MprotectTracker::Collect(std::vector<PageRange>* written) {
  PW_RETURN_IF_ERROR(CheckProcess("Collect"));
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t pg = PageSize();
  const size_t from = written->size();
  Status first_error;
  for (const auto& rp : ranges_) {
    MpRange* r = rp.get();
    const size_t n = r->bits.pages();
    // 1. Take the written set, word by word, atomically.
    for (size_t w = 0; w < r->bits.words(); ++w) {
      r->scratch.word(w).store(r->bits.word(w).exchange(0, std::memory_order_acq_rel),
                               std::memory_order_relaxed);
    }
    // 2. Re-protect the whole range: one mprotect per run of equal user
    // protection (normally one), which also re-merges the VMAs.
    Status s = ProtectRuns(r, 0, n, /*restore_user=*/false);
    if (!s.ok() && s.err() == ENOMEM) {
      // Part of the range was unmapped: protect what is mapped, and do not
      // report pages that are gone (reading them would crash the caller).
      Result<std::vector<Vma>> maps = ReadMaps(env_);
      if (maps.ok()) {
        std::vector<PageRange> parts = {{r->start, r->end}};
        ClipToMapped(*maps, &parts);
        s = Status::Ok();
        for (const PageRange& p : parts) {
          Status ps = ProtectRuns(r, (p.start - r->start) / pg, (p.end - r->start) / pg, false);
          if (!ps.ok() && s.ok()) s = ps;
        }
        ForEachRun(r->scratch, [&](size_t a, size_t b) {
          for (size_t p = a; p < b; ++p) {
            if (!IsMapped(*maps, r->start + p * pg)) {
              r->scratch.word(p / 64).fetch_and(~(uint64_t{1} << (p % 64)),
                                                std::memory_order_relaxed);
            }
          }
        });
      } else {
        s = maps.status();
      }
    }
    if (!s.ok()) {
      // Some taken pages may still be writable: keep them written so the
      // next collect reports them again and retries the re-protect. They
      // are reported now as well.
      ForEachRun(r->scratch, [&](size_t a, size_t b) { r->bits.SetRange(a, b); });
      if (first_error.ok()) {
        first_error = s.WithContext("Collect " + RangeString(r->start, r->end) + ": re-protecting");
      }
    }
    // 3. Report.
    ForEachRun(r->scratch, [&](size_t a, size_t b) {
      AppendRange(written, r->start + a * pg, r->start + b * pg);
    });
  }
  SortAndCoalesce(written, from);
  stats_.collects++;
  for (size_t i = from; i < written->size(); ++i) stats_.pages_reported += (*written)[i].pages(pg);
  return first_error;
}

void MprotectTracker::OnDropped(uint64_t start, uint64_t end) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t pg = PageSize();
  for (const auto& r : ranges_) {
    const uint64_t s = std::max(start, r->start), e = std::min(end, r->end);
    if (s < e) r->bits.SetRange((s - r->start) / pg, (e - r->start) / pg);
  }
}

int MprotectTracker::InterceptMprotect(void* addr, size_t len, int prot) {
  const uint64_t pg = PageSize();
  const uint64_t a = reinterpret_cast<uint64_t>(addr);
  if (a % pg != 0 || len == 0 || a + len < a) return sys::RawMprotect(addr, len, prot);
  const uint64_t end = a + (len + pg - 1) / pg * pg;
  // No allocation here: programs call mprotect from SIGSEGV handlers.
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t cursor = a;
  for (const auto& rp : ranges_) {  // sorted by start
    MpRange* r = rp.get();
    if (r->end <= a || r->start >= end) continue;
    const uint64_t s = std::max(a, r->start), e = std::min(end, r->end);
    if (cursor < s && sys::RawMprotect(reinterpret_cast<void*>(cursor), s - cursor, prot) != 0) {
      return -1;
    }
    // Remember what the program wants; grant PROT_WRITE only through a
    // fault, so that every page written from now on is recorded.
    for (uint64_t p = s; p < e; p += pg) r->SetProt((p - r->start) / pg, prot);
    if (sys::RawMprotect(reinterpret_cast<void*>(s), e - s, prot & kEffectiveMask) != 0) return -1;
    cursor = e;
  }
  if (cursor < end) return sys::RawMprotect(reinterpret_cast<void*>(cursor), end - cursor, prot);
  return 0;
}

// mremap moves pages with their protection: tracked read-only pages would
// arrive read-only at an address nobody tracks, and the program's next write
// there would crash. So before the move, give the pages in the old range the
// program's protection back, marking them written first (under mu_, so no
// collect can re-protect them in between; if the mremap fails or resizes in
// place, they stay writable with their bits set, which the invariant allows,
// and the next collect reports and re-protects them).
void* MprotectTracker::InterceptMremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                                       void* new_addr) {
  const uint64_t pg = PageSize();
  const uint64_t a = reinterpret_cast<uint64_t>(old_addr);
  if (a % pg != 0 || old_len == 0 || a + old_len < a) {
    return sys::RawMremap(old_addr, old_len, new_len, flags, new_addr);
  }
  const uint64_t end = a + (old_len + pg - 1) / pg * pg;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : ranges_) {
    const uint64_t s = std::max(a, r->start), e = std::min(end, r->end);
    if (s >= e) continue;
    const size_t first = (s - r->start) / pg, last = (e - r->start) / pg;
    r->bits.SetRange(first, last);
    // Best effort: a failure (part unmapped) leaves those pages read-only,
    // as the program would find them without pagewise.
    ProtectRuns(r.get(), first, last, /*restore_user=*/true).IgnoreError();
  }
  return sys::RawMremap(old_addr, old_len, new_len, flags, new_addr);
}

}  // namespace

Result<std::unique_ptr<Tracker>> CreateMprotect(Env* env, const KernelFeatures&) {
  if (!InterposersLinked()) return Status::NotSupported(std::string(kMprotectNeedsInterposers));
  {
    std::lock_guard<std::mutex> lock(g_singleton_mu);
    if (g_singleton_exists) {
      return Status::FailedPrecondition(
          "an mprotect-backend tracker already exists in this process (it owns the SIGSEGV "
          "handler and the mprotect interposer); destroy it first, track more ranges with it, "
          "or use a userfaultfd backend");
    }
    g_singleton_exists = true;
  }
  auto t = std::make_unique<MprotectTracker>(env);
  Status s = t->Install();
  if (!s.ok()) return s.WithContext("mprotect tracker");  // t's destructor clears the singleton
  return std::unique_ptr<Tracker>(std::move(t));
}

}  // namespace pagewise::track_internal
