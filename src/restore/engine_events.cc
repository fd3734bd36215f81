// Engine: the messages of a space's userfaultfd, read holding its gate
// exclusive (see "Ordering" in engine.h) by the loop (LoopHandler) or by a
// filler (SpaceSink, sys::DrainUffd): non-cooperative events are applied to
// the page map, faults queued for the loop thread.
#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "base/pause_point.h"
#include "restore/engine.h"

namespace pagewise::restore {

// Applies the messages of one space that a filler drains itself (after an
// EAGAIN or ENOENT): the loop's dispatch, into OnMessageLocked.
class Engine::SpaceSink final : public sys::UffdHandler {
 public:
  SpaceSink(Engine* e, Space* s) : e_(e), s_(s), read_at_(Clock::now()) {}
  void OnPagefault(uint64_t, const UffdEvent& ev) override { Message(ev); }
  bool OnFork(uint64_t, const UffdEvent& ev) override {
    Message(ev);  // the child's fd is adopted
    return true;
  }
  void OnRemap(uint64_t, const UffdEvent& ev) override { Message(ev); }
  void OnRemove(uint64_t, const UffdEvent& ev) override { Message(ev); }
  void OnUnmap(uint64_t, const UffdEvent& ev) override { Message(ev); }
  void OnUnknown(uint64_t, const UffdEvent& ev) override { Message(ev); }
  bool queued() const { return queued_; }

 private:
  void Message(const UffdEvent& ev) {
    queued_ = queued_ || ev.kind == UffdEvent::Kind::kPagefault;
    e_->OnMessageLocked(*s_, ev, read_at_);
  }
  Engine* e_;
  Space* s_;
  Clock::time_point read_at_;
  bool queued_ = false;
};

size_t Engine::DrainEvents(Space& s) {
  PW_PAUSE_POINT("engine.drain.read");  // pagewise explore (base/pause_point.h)
  s.gate.EnterRead();
  const size_t n = DrainEventsHeld(s);
  s.gate.ExitRead();
  return n;
}

size_t Engine::DrainEventsHeld(Space& s) {
  constexpr size_t kBatch = 64;
  UffdEvent events[kBatch];
  std::lock_guard<std::mutex> lk(s.mu);
  if (!s.uffd.valid() || s.dead) return 0;
  SpaceSink sink(this, &s);
  // Bounded (sys::DrainUffd's rounds) so that a flood of faults cannot keep
  // a filler here; whatever is left keeps the fd readable for the loop.
  Result<size_t> n = sys::DrainUffd(env_, s.uffd.fd(), s.id, &sink, events, kBatch);
  if (!n.ok()) {
    Fail(n.status().WithContext("reading userfaultfd of space " + std::to_string(s.id)));
    MarkDeadLocked(s);
  }
  s.Sync();
  // Faults are served by the loop thread only. When a filler read them,
  // the loop may be asleep in poll on a uffd that is no longer readable:
  // wake it.
  if (sink.queued()) Notify();
  return n.ok() ? *n : 0;
}

void Engine::OnMessageLocked(Space& s, const UffdEvent& e, Clock::time_point read_at) {
  if (fork_recording_) {
    // Fork mode: nothing may allocate (restore/fork_guard.h); keep the
    // message for after the fork. Leave room for one more batch: when the
    // storage is nearly full the sources are set aside until then (the
    // kernel keeps what we do not read).
    fork_events_[fork_count_] = e;
    fork_event_space_[fork_count_] = &s;
    ++fork_count_;
    if (fork_count_ + 64 >= fork_events_.size()) {
      for (uint32_t id : looped_) loop_->RemoveUffd(id);
      looped_.clear();
    }
    return;
  }
  if (e.kind != UffdEvent::Kind::kPagefault) {
    ApplyEventLocked(s, e);
    return;
  }
  // The loop dispatches a batch's events before its faults (the kernel
  // hands out pending faults ahead of pending events, so a fault read now
  // may concern an address an event of the same batch moved, dropped or
  // unmapped; the post-event answer is the safe one).
  if (!s.dead) s.faults.push_back({e, read_at});
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
  if (opt_.max_spaces > 0) {
    size_t live = 0;
    for (const SpacePtr& sp : SnapshotSpaces()) live += sp->closed.load() ? 0 : 1;
    if (live >= opt_.max_spaces) return RefuseForkLocked(parent, child_fd);
  }
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
  stats_.Add(&RestoreStats::spaces_refused);
  if (opt_.on_space_refused) {
    opt_.on_space_refused(Status(Code::kResourceExhausted, 0,
                                 "a forked child was not served: more than " +
                                     std::to_string(opt_.max_spaces) +
                                     " address spaces (its missing pages were poisoned)"));
  }
}  // `child` closes the child's userfaultfd

}  // namespace pagewise::restore
