// Engine: reading a space's userfaultfd (holding its gate exclusive, see
// "Ordering" in engine.h) and applying the non-cooperative events to its
// page map; faults are queued for the loop thread.
#include <algorithm>
#include <cerrno>
#include <utility>

#include "restore/engine.h"

namespace pagewise::restore {

size_t Engine::DrainEvents(Space& s) {
  s.gate.EnterRead();
  const size_t n = DrainEventsHeld(s);
  s.gate.ExitRead();
  return n;
}

size_t Engine::DrainEventsHeld(Space& s) {
  constexpr size_t kBatch = 64;
  UffdEvent events[kBatch];
  size_t total = 0;
  bool queued = false;
  std::lock_guard<std::mutex> lk(s.mu);
  // Bounded so that a flood of faults cannot keep one caller here forever;
  // whatever is left keeps the fd readable for the loop thread.
  for (int round = 0; round < 16 && s.uffd.valid() && !s.dead; ++round) {
    Result<size_t> n = s.uffd.ReadEvents(events, kBatch);
    if (!n.ok()) {
      Fail(n.status().WithContext("reading userfaultfd of space " + std::to_string(s.id)));
      MarkDeadLocked(s);
      break;
    }
    if (*n == 0) break;
    total += *n;
    const size_t before = s.faults.size();
    ApplyBatchLocked(s, events, *n, Clock::now());
    queued = queued || s.faults.size() > before;
    if (*n < kBatch) break;
  }
  // Faults are served by the loop thread only. When a filler read them
  // (draining after EAGAIN), the loop may be asleep in poll on a uffd that
  // is no longer readable: wake it.
  if (queued) Notify();
  return total;
}

void Engine::ApplyBatchLocked(Space& s, const UffdEvent* events, size_t n, Clock::time_point now) {
  // Apply the non-cooperative events of the batch before queueing its
  // faults. The kernel hands out pending faults ahead of pending events,
  // so a fault read now may be about an address that an event of this
  // same batch already moved, dropped or unmapped; serving it against the
  // pre-event map could install source data the program no longer wants.
  // (The faulting access raced with the event, so either outcome is one
  // the program must accept; the post-event one is the safe one.)
  for (size_t i = 0; i < n; ++i) {
    if (events[i].kind != UffdEvent::Kind::kPagefault) ApplyEventLocked(s, events[i]);
  }
  for (size_t i = 0; i < n; ++i) {
    if (events[i].kind == UffdEvent::Kind::kPagefault && !s.dead) {
      s.faults.push_back({events[i], now});
    }
  }
  s.Sync();
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
      // the parent completed in between, and the gate we hold exclusive
      // means every fill that completed before is in the map: the parent's
      // map is exactly the child's state. The forking thread stays blocked
      // until we return.
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
  stats_.Add(counter);
}

void Engine::AdoptForkLocked(Space& parent, int child_fd) {
  if (child_fd < 0) return;
  auto child = std::make_shared<Space>();
  child->uffd = sys::Userfaultfd::Adopt(Relocate(child_fd), parent.uffd.features(), env_);
  child->map = parent.map;
  child->sched = parent.sched;
  child->Sync();
  {
    std::lock_guard<std::mutex> lk(mu_);
    child->id = next_id_++;
    spaces_.push_back(std::move(child));
    work_epoch_++;
  }
  cv_.notify_all();
  Notify();  // the loop thread must start polling the child's fd
  stats_.Add(&RestoreStats::spaces_total);
}

}  // namespace pagewise::restore
