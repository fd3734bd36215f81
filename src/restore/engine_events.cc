// Engine: the userfaultfd events of a space (drained under its lock and
// applied to its page map), and fork mode (fork_guard.h): while the
// restored program forks, the filler is parked and the server thread only
// reads events and faults into preallocated buffers (nothing may allocate
// while the forking thread holds glibc's locks); what it read is applied
// once the fork has returned.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "restore/engine.h"

namespace pagewise::restore {

size_t Engine::DrainLocked(Space& s) {
  constexpr size_t kBatch = 64;
  UffdEvent events[kBatch];
  size_t total = 0;
  bool queued = false;
  // Bounded so that a flood of faults cannot keep one caller here forever;
  // whatever is left keeps the fd readable for the server thread.
  for (int round = 0; round < 16 && s.uffd.valid() && !s.dead; ++round) {
    Result<size_t> n = s.uffd.ReadEvents(events, kBatch);
    if (!n.ok()) {
      Fail(n.status().WithContext("reading userfaultfd of space " + std::to_string(s.id)));
      MarkDeadLocked(s, "read failed");
      break;
    }
    if (*n == 0) break;
    total += *n;
    const Clock::time_point now = Clock::now();
    // Apply the non-cooperative events of the batch before queueing its
    // faults. The kernel hands out pending faults ahead of pending events,
    // so a fault read now may be about an address that an event of this
    // same batch already moved, dropped or unmapped; serving it against the
    // pre-event map could install source data the program no longer wants.
    // (The faulting access raced with the event, so either outcome is one
    // the program must accept; the post-event one is the safe one.)
    for (size_t i = 0; i < *n; ++i) {
      if (events[i].kind != UffdEvent::Kind::kPagefault) ApplyEventLocked(s, events[i]);
    }
    for (size_t i = 0; i < *n; ++i) {
      if (events[i].kind == UffdEvent::Kind::kPagefault) {
        s.faults.push_back({events[i], now});
        queued = true;
      }
    }
    if (*n < kBatch) break;
  }
  SyncLocked(s);
  // Faults are served by the server thread only. When the filler read them
  // (draining after EAGAIN), the server may be asleep in poll on a uffd
  // that is no longer readable: wake it.
  if (queued) Notify();
  return total;
}

void Engine::ApplyEventLocked(Space& s, const UffdEvent& e) {
  uint64_t RestoreStats::*counter = &RestoreStats::unknown_events;
  switch (e.kind) {
    case UffdEvent::Kind::kFork:
      // A child mm now exists, with its own userfaultfd. Its memory at fork
      // time is the parent's filled pages (the kernel copied them with the
      // page tables) plus holes where the parent had not been filled yet,
      // which must come from the same source. The parent's ctx had
      // mmap_changing raised from dup_mmap until this read, so no fill of
      // the parent completed in between: the parent's map is exactly the
      // child's state. The forking thread stays blocked until we return.
      counter = &RestoreStats::forks;
      AdoptForkLocked(s, e.fork_fd);
      break;
    case UffdEvent::Kind::kRemap:
      // mremap moved [from, from+len) to `to` together with its page
      // tables: filled pages moved, holes moved, so states and source
      // offsets move with them. (Growth beyond len is not ours: faults
      // there get zero pages, as fresh anonymous memory would.)
      counter = &RestoreStats::remaps;
      s.map.Move(e.from, e.to, e.len);
      break;
    case UffdEvent::Kind::kRemove:
      // MADV_DONTNEED/MADV_REMOVE (or MADV_FREE): the program threw these
      // pages away and expects zeros. The range stays registered: never
      // fill it from the source again; its later faults get zero pages.
      counter = &RestoreStats::removes;
      s.map.Drop(e.start, e.end);
      break;
    case UffdEvent::Kind::kUnmap:
      // munmap (or an mmap/mremap over it): the range is gone; forget it
      // and stop filling it.
      counter = &RestoreStats::unmaps;
      s.map.Erase(e.start, e.end);
      break;
    case UffdEvent::Kind::kPagefault:
    case UffdEvent::Kind::kUnknown:
      break;
  }
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.*counter += 1;
}

void Engine::RefuseForkLocked(Space& parent, int child_fd) {
  // The child's memory is the parent's filled pages plus holes where the
  // parent's map says unfilled (see kFork above). Closing its userfaultfd
  // alone would let those holes read as zeros; poisoned, they raise SIGBUS.
  // The forking thread waits until this returns, so the child cannot touch
  // them first.
  sys::Userfaultfd child = sys::Userfaultfd::Adopt(child_fd, parent.uffd.features(), env_);
  std::vector<uint64_t> holes;
  parent.map.PagesIn(PageState::kUnfilled, &holes);
  for (size_t i = 0; i < holes.size();) {
    size_t n = 1;
    while (i + n < holes.size() && holes[i + n] == holes[i] + n * page_size_) ++n;
    // Partial progress (EAGAIN: the child's mm is changing; EEXIST: a page
    // is there after all) resumes after what was done, past the page that
    // stopped it; attempts are bounded.
    uint64_t at = holes[i];
    const uint64_t end = holes[i] + n * page_size_;
    for (int attempt = 0; at < end && attempt < 64; ++attempt) {
      const FillResult r = child.Poison(at, end - at);
      at += r.bytes;
      if (r.ok() || r.error == ESRCH) break;
      if (r.error != EAGAIN) at += page_size_;
    }
    i += n;
  }
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.spaces_refused++;
  }
  if (opt_.on_space_refused) {
    opt_.on_space_refused(Status(Code::kResourceExhausted, 0,
                                 "a forked child was not served: more than " +
                                     std::to_string(opt_.max_spaces) +
                                     " address spaces (its missing pages were poisoned)"));
  }
}  // `child` closes the child's userfaultfd

// ---- fork(2) of the restored program (fork_guard.h) ----------------------

void Engine::EnterForkMode() {
  std::unique_lock<std::mutex> lk(mu_);
  if (server_exited_) return;
  fork_phase_ = ForkPhase::kRequested;
  cv_.notify_all();            // the filler, if idle
  eventfd_write(wake_fd_, 1);  // the server, if in poll
  cv_.wait(lk, [&] {
    return server_exited_ || (server_parked_ && (!filler_running_ || filler_parked_));
  });
}

void Engine::LeaveForkMode() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    fork_phase_ = server_exited_ ? ForkPhase::kNone : ForkPhase::kApplying;
  }
  cv_.notify_all();
  eventfd_write(wake_fd_, 1);
}

void Engine::BecomeForkedCopy() { forked_copy_.store(true); }

void Engine::ParkForFork() {
  std::unique_lock<std::mutex> lk(mu_);
  if (fork_phase_ == ForkPhase::kNone) return;
  filler_parked_ = true;
  cv_.notify_all();
  cv_.wait(lk, [&] { return fork_phase_ == ForkPhase::kNone || stopping_; });
  filler_parked_ = false;
}

void Engine::ForkModeLoop() {
  constexpr size_t kForkEvents = 4096;
  // Allocate everything now: the forking thread is still in its prepare
  // handler, waiting for our acknowledgement before glibc takes its locks.
  std::vector<SpacePtr> spaces = SnapshotSpaces();
  fork_pfds_.clear();
  fork_polled_.clear();
  fork_pfds_.reserve(spaces.size() + 1);
  fork_polled_.reserve(spaces.size());
  fork_pfds_.push_back({wake_fd_, POLLIN, 0});
  for (const SpacePtr& s : spaces) {
    std::lock_guard<std::mutex> lk(s->mu);
    if (!s->uffd.valid()) continue;
    fork_pfds_.push_back({s->uffd.fd(), POLLIN, 0});
    fork_polled_.push_back(s);
  }
  fork_events_.resize(kForkEvents);
  fork_event_space_.resize(kForkEvents);
  size_t count = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_parked_ = true;
  }
  cv_.notify_all();
  // From here until the fork returned: poll, lock, read. Nothing allocates.
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (fork_phase_ != ForkPhase::kRequested || stopping_) break;
    }
    Result<int> n = env_->Poll(fork_pfds_.data(), fork_pfds_.size(), -1);
    if (!n.ok()) break;
    if (fork_pfds_[0].revents & POLLIN) {
      eventfd_t v;
      eventfd_read(wake_fd_, &v);
    }
    for (size_t i = 0; i < fork_polled_.size(); ++i) {
      if ((fork_pfds_[i + 1].revents & POLLIN) == 0 || count == kForkEvents) continue;
      Space& s = *fork_polled_[i];
      std::lock_guard<std::mutex> lk(s.mu);
      if (!s.uffd.valid()) continue;
      Result<size_t> got =
          s.uffd.ReadEvents(&fork_events_[count], std::min<size_t>(64, kForkEvents - count));
      if (!got.ok()) continue;  // handled when normal service resumes
      for (size_t k = 0; k < *got; ++k) fork_event_space_[count + k] = &s;
      count += *got;
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_parked_ = false;
  }
  // Apply what was read, per space in order: events first, then faults
  // (as DrainLocked does for one batch).
  const Clock::time_point now = Clock::now();
  for (const SpacePtr& sp : fork_polled_) {
    Space& s = *sp;
    std::lock_guard<std::mutex> lk(s.mu);
    for (size_t k = 0; k < count; ++k) {
      if (fork_event_space_[k] == &s && fork_events_[k].kind != UffdEvent::Kind::kPagefault) {
        ApplyEventLocked(s, fork_events_[k]);
      }
    }
    for (size_t k = 0; k < count; ++k) {
      if (fork_event_space_[k] == &s && fork_events_[k].kind == UffdEvent::Kind::kPagefault) {
        s.faults.push_back({fork_events_[k], now});
      }
    }
    SyncLocked(s);
  }
  fork_polled_.clear();
  {
    std::lock_guard<std::mutex> lk(mu_);
    // (A new fork may already have asked again: leave kRequested alone.)
    if (fork_phase_ == ForkPhase::kApplying) fork_phase_ = ForkPhase::kNone;
  }
  cv_.notify_all();  // the filler
}

}  // namespace pagewise::restore
