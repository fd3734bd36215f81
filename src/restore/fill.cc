// Engine filling: serving one fault, installing runs with UFFDIO_COPY /
// UFFDIO_ZEROPAGE, and planning background batches. The kernel's answers
// (partial progress, EAGAIN, EEXIST, ENOENT, ESRCH) are control flow here.
#include <cerrno>
#include <cstring>
#include <thread>

#include "restore/engine.h"
#include "sys/uapi.h"

namespace pagewise::restore {
namespace {

bool IsZeroPage(const char* p, size_t len) {
  uint64_t acc = 0;
  for (size_t i = 0; i < len; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, sizeof(w));
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc != 0) return false;
  }
  return true;
}

constexpr size_t kMaxHints = 32;

}  // namespace

void Engine::AddStats(FillKind kind, bool zero, uint64_t pages) {
  std::lock_guard<std::mutex> lk(stats_mu_);
  switch (kind) {
    case FillKind::kDemand:
      stats_.pages_demand += pages;
      break;
    case FillKind::kPrefetch:
      stats_.pages_prefetch += pages;
      stats_.pages_background += pages;
      break;
    case FillKind::kBackground:
      stats_.pages_background += pages;
      break;
  }
  if (zero) {
    stats_.zero_pages += pages;
  } else {
    stats_.bytes_copied += pages * page_size_;
  }
}

void Engine::EagainBackoff(std::unique_lock<std::mutex>& lock, int* spins) {
  // EAGAIN with nothing to read: the event was read (by us or the other
  // thread) but the thread that caused it has not yet run to clear the
  // kernel's mmap_changing count. Let it run, without holding the space.
  lock.unlock();
  if (++*spins < 64) {
    std::this_thread::yield();
  } else {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::milliseconds(1), [&] { return stopping_; });
  }
  lock.lock();
}

int Engine::EnoentPatience(const Space& s) const {
  // With EVENT_UNMAP and EVENT_REMAP every disappearance of a registered
  // mapping is announced (exit shows as ESRCH instead), so keep waiting for
  // the event (about 5 s of backoff before giving up). Without them, or
  // when the features are unknown (a server's client), give up quickly.
  const uint64_t both = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP;
  return (s.uffd.features() & both) == both ? 5000 : 64;
}

void Engine::InstallLocked(Space& s, std::unique_lock<std::mutex>& lock, const Run& run,
                           const char* data, const std::vector<uint8_t>& zero, FillKind kind) {
  const size_t ps = page_size_;
  size_t i = 0;
  int spins = 0;
  int enoent_waits = 0;
  while (i < run.pages) {
    if (s.closed.load() || !s.uffd.valid()) break;
    const uint64_t addr = run.addr + i * ps;
    // Re-validate under the lock: since the run was planned the page may
    // have been filled (by the other thread), dropped, moved or unmapped.
    if (!s.map.IsUnfilledWith(addr, run.src + i * ps)) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < run.pages && zero[j] == zero[i] &&
           s.map.IsUnfilledWith(run.addr + j * ps, run.src + j * ps)) {
      ++j;
    }
    const uint64_t len = (j - i) * ps;
    const FillResult r =
        zero[i] ? s.uffd.Zeropage(addr, len) : s.uffd.Copy(addr, data + i * ps, len);
    const size_t done = static_cast<size_t>(std::min<uint64_t>(r.bytes, len) / ps);
    if (done > 0) {
      s.map.Set(addr, done, PageState::kFilled);
      AddStats(kind, zero[i] != 0, done);
      i += done;
    }
    if (r.ok()) {
      if (done == 0) {  // success without progress would loop forever
        Fail(Status::Internal("userfaultfd fill reported success without progress"));
        s.map.Set(addr, 1, PageState::kBad);
        ++i;
      }
      continue;
    }
    const uint64_t at = run.addr + i * ps;  // the page the kernel stopped at
    switch (r.error) {
      case EEXIST: {
        // A page is already mapped there: another fill got there first, or
        // the program's own page in a mapping it handed us. Its content is
        // authoritative; count it as filled and go on with the rest. A
        // failed ioctl wakes nobody, so wake whoever waits on that page.
        s.map.Set(at, 1, PageState::kFilled);
        s.uffd.Wake(at, ps).IgnoreError();  // nobody may be waiting: harmless
        ++i;
        std::lock_guard<std::mutex> lk(stats_mu_);
        stats_.eexist_pages++;
        break;
      }
      case EAGAIN: {
        // Either a non-cooperative event (fork, mremap, madvise, munmap) is
        // pending and the kernel refuses to change the mm until we read it
        // (mmap_changing), or the kernel stopped after partial progress.
        // Read and apply pending events first; the loop then retries only
        // what is still unfilled, re-checking every page (the range may
        // have been dropped, moved or unmapped by those events).
        {
          std::lock_guard<std::mutex> lk(stats_mu_);
          stats_.eagain_retries++;
        }
        const size_t read = DrainLocked(s);
        if (read == 0 && done == 0) EagainBackoff(lock, &spins);
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
        const size_t read = DrainLocked(s);
        if (read > 0) break;
        if (++enoent_waits < EnoentPatience(s)) {
          EagainBackoff(lock, &spins);
          break;
        }
        enoent_waits = 0;
        s.map.Set(at, 1, PageState::kGone);
        s.uffd.Wake(at, ps).IgnoreError();  // nothing may be waiting: harmless
        ++i;
        std::lock_guard<std::mutex> lk(stats_mu_);
        stats_.enoent_pages++;
        break;
      }
      case ESRCH:
        // The mm is gone (the process exited): nothing left to serve.
        MarkDeadLocked(s, "ESRCH");
        break;
      default: {
        // ENOMEM, EFAULT, EINVAL...: the page cannot be installed. Mark it
        // bad so that an access is poisoned (SIGBUS), never a silent zero.
        Fail(sys::FillStatus(r, zero[i] ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY", at, len));
        s.map.Set(at, 1, PageState::kBad);
        s.uffd.Wake(at, ps).IgnoreError();  // let it refault and be poisoned
        ++i;
        break;
      }
    }
  }
  SyncLocked(s);
}

void Engine::FillRun(Space& s, const Run& run, FillKind kind, std::vector<char>* buf) {
  const size_t ps = page_size_;
  const size_t bytes = run.pages * ps;
  const Clock::time_point t0 = Clock::now();
  std::vector<uint8_t> zero(run.pages, 0);
  Status st;
  if (opt_.fill.use_zeropage && source_->can_classify()) {
    st = source_->ClassifyZero(run.src, run.pages, ps, &zero);
  }
  const char* data = static_cast<const char*>(source_->Direct(run.src, bytes));
  bool all_zero = true;
  for (uint8_t z : zero) all_zero = all_zero && z != 0;
  if (st.ok() && data == nullptr && !all_zero) {
    buf->resize(bytes);
    const ReadPriority priority = kind == FillKind::kDemand     ? ReadPriority::kDemand
                                  : kind == FillKind::kPrefetch ? ReadPriority::kPrefetch
                                                                : ReadPriority::kBackground;
    st = source_->ReadWithPriority(run.src, buf->data(), bytes, priority);
    data = buf->data();
  }
  if (st.ok() && opt_.fill.use_zeropage && !source_->can_classify()) {
    for (size_t i = 0; i < run.pages; ++i) zero[i] = IsZeroPage(data + i * ps, ps) ? 1 : 0;
  }
  std::unique_lock<std::mutex> lock(s.mu);
  if (!st.ok()) {
    // The source cannot give these pages. They must never read as zero:
    // mark them bad, so that a fault on them is poisoned (SIGBUS).
    for (size_t i = 0; i < run.pages; ++i) {
      if (s.map.IsUnfilledWith(run.addr + i * ps, run.src + i * ps)) {
        s.map.Set(run.addr + i * ps, 1, PageState::kBad);
      }
    }
    SyncLocked(s);
    lock.unlock();
    Fail(st.WithContext("reading the restore source at offset " + std::to_string(run.src)));
    return;
  }
  InstallLocked(s, lock, run, data, zero, kind);
  lock.unlock();
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.fill_ns += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

bool Engine::ZeroOrWakeLocked(Space& s, std::unique_lock<std::mutex>& lock, uint64_t page) {
  const FillResult r = s.uffd.Zeropage(page, page_size_);
  if (r.ok()) {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.zero_pages++;
    return false;
  }
  switch (r.error) {
    case EEXIST:  // resolved before we read the fault: just wake the thread
    case ENOENT:  // no registered mapping now: wake it to see what the program did
      s.uffd.Wake(page, page_size_).IgnoreError();  // the thread may be gone: harmless
      return false;
    case EAGAIN: {
      // An event is pending: apply it, then let the caller look again (it
      // may have moved source data to this address).
      int spins = 0;
      if (DrainLocked(s) == 0) EagainBackoff(lock, &spins);
      return true;
    }
    case ESRCH:
      MarkDeadLocked(s, "ESRCH");
      return false;
    default:
      Fail(sys::FillStatus(r, "UFFDIO_ZEROPAGE", page, page_size_));
      s.uffd.Wake(page, page_size_).IgnoreError();  // best effort: the fill failed
      return false;
  }
}

bool Engine::PoisonLocked(Space& s, std::unique_lock<std::mutex>& lock, uint64_t page) {
  // The source failed for this page: make the access fail loudly (SIGBUS)
  // rather than read zeros. Needs UFFDIO_POISON (Linux 6.6); without it the
  // thread stays blocked, which is still not a silent zero.
  const FillResult r = s.uffd.Poison(page, page_size_);
  if (r.ok()) {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.poisoned_pages++;
    return false;
  }
  if (r.error == EAGAIN) {
    int spins = 0;
    if (DrainLocked(s) == 0) EagainBackoff(lock, &spins);
    return true;
  }
  switch (r.error) {
    case EEXIST:  // resolved meanwhile
    case ENOENT:  // no mapping there now: let the thread see what the program did
      s.uffd.Wake(page, page_size_).IgnoreError();  // the thread may be gone: harmless
      break;
    case ESRCH:
      MarkDeadLocked(s, "ESRCH");
      break;
    default:
      Fail(sys::FillStatus(r, "UFFDIO_POISON", page, page_size_));
      break;
  }
  return false;
}

void Engine::ServeFault(Space& s, const QueuedFault& f) {
  const size_t ps = page_size_;
  const uint64_t page = f.event.address & ~static_cast<uint64_t>(ps - 1);
  if (f.event.flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR)) {
    // Write-protect and minor faults belong to modes a client may have
    // registered for its own purposes; we only serve missing pages.
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.unknown_events++;
    return;
  }
  bool counted = false;
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::unique_lock<std::mutex> lock(s.mu);
    if (s.closed.load() || !s.uffd.valid()) return;
    const SpaceMap::Lookup l = s.map.Find(page);
    if (l.found && l.state == PageState::kUnfilled) {
      const Run run = s.map.RunAround(page, opt_.fill.fault_window_pages);
      lock.unlock();
      if (!counted) {
        counted = true;
        const uint64_t t_ns = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(f.read_at - start_).count());
        std::lock_guard<std::mutex> lk(stats_mu_);
        stats_.demand_faults++;
        if (stats_.first_fault_ns < 0) stats_.first_fault_ns = static_cast<int64_t>(t_ns);
        if (prefetch_set_.count(l.src)) stats_.prefetch_late_faults++;
        if (opt_.fill.record_trace) {
          // The whole window this fault installs, faulting page first: a
          // replay must bring in what the program got, not one page per window.
          if (traced_.insert(l.src).second) trace_.push_back({l.src, t_ns});
          for (uint64_t k = 0; k < run.pages; ++k) {
            const uint64_t src = run.src + k * ps;
            if (traced_.insert(src).second) trace_.push_back({src, t_ns});
          }
        }
      }
      FillRun(s, run, FillKind::kDemand, &demand_buf_);
      lock.lock();
      const SpaceMap::Lookup after = s.map.Find(page);
      if (after.found && (after.state == PageState::kUnfilled || after.state == PageState::kBad)) {
        continue;  // raced with an event or the source failed: look again
      }
      s.hints.push_back(run.addr + run.pages * ps);
      if (s.hints.size() > kMaxHints) s.hints.pop_front();
      lock.unlock();
      const uint64_t ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - f.read_at).count());
      std::lock_guard<std::mutex> lk(stats_mu_);
      if (stats_.fault_latency_ns.size() < opt_.fill.max_latency_samples) {
        stats_.fault_latency_ns.push_back(
            static_cast<uint32_t>(std::min<uint64_t>(ns, UINT32_MAX)));
      }
      return;
    }
    bool again;
    if (l.found && l.state == PageState::kBad) {
      again = PoisonLocked(s, lock, page);
    } else {
      // Not a page we fill from the source:
      //  - kDropped: the program dropped it (MADV_DONTNEED): zeros;
      //  - not ours (mremap growth, MREMAP_DONTUNMAP's old range, memory we
      //    never restored): a fresh anonymous page is zero;
      //  - kFilled: resolved before we read the message (ZEROPAGE then says
      //    EEXIST and we wake the thread), or zapped without a REMOVE event
      //    (a client without EVENT_REMOVE): zero is what it would read;
      //  - kGone: no mapping; ZEROPAGE fails with ENOENT and we wake.
      again = ZeroOrWakeLocked(s, lock, page);
    }
    if (!again) {
      if (!counted) {
        std::lock_guard<std::mutex> lk(stats_mu_);
        stats_.other_faults++;
      }
      return;
    }
  }
  // The map kept changing under this fault: wake the thread; if the page is
  // still missing it faults again and we see a fresh message.
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.uffd.valid()) s.uffd.Wake(page, ps).IgnoreError();  // best effort
}

std::vector<Run> Engine::PlanLocked(Space& s, FillKind* kind) {
  const size_t ps = page_size_;
  const size_t budget = opt_.fill.background_batch_pages;
  std::vector<Run> runs;
  // 1. The recorded working set, in trace order, in large batches.
  if (s.prefetch_pos < opt_.fill.prefetch.size()) {
    std::vector<uint64_t> addrs;
    while (s.prefetch_pos < opt_.fill.prefetch.size() && addrs.size() < budget) {
      s.map.UnfilledAt(opt_.fill.prefetch[s.prefetch_pos++] & ~static_cast<uint64_t>(ps - 1),
                       &addrs);
    }
    std::sort(addrs.begin(), addrs.end());
    addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
    for (uint64_t a : addrs) {
      const uint64_t src = s.map.Find(a).src;
      if (!runs.empty() && runs.back().addr + runs.back().pages * ps == a &&
          runs.back().src + runs.back().pages * ps == src) {
        runs.back().pages++;
      } else {
        runs.push_back({a, src, 1});
      }
    }
    if (!runs.empty()) {
      *kind = FillKind::kPrefetch;
      return runs;
    }
  }
  *kind = FillKind::kBackground;
  if (!background_on_.load()) return runs;  // prefetch only (background_fill = false)
  // 2. What follows recent faults (most recent first): sequential readers
  // find their next pages in place.
  while (!s.hints.empty()) {
    const uint64_t h = s.hints.back();
    s.hints.pop_back();
    const Run r = s.map.NextUnfilled(h, budget);
    if (r.pages > 0 && r.addr < h + 4 * budget * ps) {
      runs.push_back(r);
      return runs;
    }
  }
  // 3. Everything else in address order, wrapping once.
  Run r = s.map.NextUnfilled(s.cursor, budget);
  if (r.pages == 0) r = s.map.NextUnfilled(0, budget);
  if (r.pages > 0) {
    s.cursor = r.addr + r.pages * ps;
    runs.push_back(r);
  }
  return runs;
}

bool Engine::FillOnce() {
  last_fill_prefetch_ = false;
  std::vector<SpacePtr> spaces = SnapshotSpaces();
  if (spaces.empty()) return false;
  for (size_t k = 0; k < spaces.size(); ++k) {
    Space& s = *spaces[(filler_rr_ + k) % spaces.size()];
    std::vector<Run> runs;
    FillKind kind = FillKind::kBackground;
    {
      std::lock_guard<std::mutex> lk(s.mu);
      if (s.closed.load() || !s.uffd.valid() || s.map.unfilled() == 0) continue;
      runs = PlanLocked(s, &kind);
    }
    if (runs.empty()) continue;  // e.g. prefetch done, background fill off: idle
    filler_rr_ = (filler_rr_ + k + 1) % spaces.size();
    for (const Run& r : runs) FillRun(s, r, kind, &fill_buf_);
    last_fill_prefetch_ = kind == FillKind::kPrefetch;
    return true;
  }
  return false;
}

}  // namespace pagewise::restore
