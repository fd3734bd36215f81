// The engine's loop thread: runs the one userfaultfd loop (sys/uffd_loop.h)
// over every space's userfaultfd (plus a watched client socket): reads and
// applies messages holding the space's gate exclusive, and serves demand
// faults itself before each poll. Fork mode (engine_fork.h) makes it record
// messages without allocating until the fork returned.
#include <poll.h>

#include <algorithm>
#include <cerrno>

#include "base/pause_point.h"
#include "restore/engine.h"
#include "sys/fd_util.h"

namespace pagewise::restore {
namespace {

// Where an engine's private descriptors go. Their numbers mean nothing in
// the process's table, but tools that track descriptors by number (TSan)
// cannot tell the tables apart: keep ours away from the low numbers the
// program uses, and engines away from each other (slots of 256 in the
// upper half of the descriptor limit). -1: leave numbers as they are.
int PrivateFdBase() {
  static std::atomic<unsigned> next_slot{0};
  const uint64_t limit = std::min<uint64_t>(sys::FdLimit(), 1 << 20);
  if (limit < 2048) return -1;
  const uint64_t slots = (limit / 2) / 256;
  return static_cast<int>(limit / 2 + (next_slot++ % slots) * 256);
}

}  // namespace

// What the loop calls: messages go to the space being read (whose gate and
// mutex BeforeRead took), the client socket's state ends the engine, and
// BeforePoll is the engine's housekeeping between polls.
class Engine::LoopHandler final : public sys::UffdHandler {
 public:
  explicit LoopHandler(Engine* e) : e_(e) {}

  void BeforeRead(uint64_t tag) override {
    PW_PAUSE_POINT("engine.loop.read");  // pagewise explore (base/pause_point.h)
    s_ = e_->SpaceById(static_cast<uint32_t>(tag));
    if (s_ == nullptr) return;
    s_->gate.EnterRead();
    s_->mu.lock();
    read_at_ = Clock::now();
  }
  void AfterRead(uint64_t, size_t) override {
    if (s_ == nullptr) return;
    s_->Sync();
    s_->mu.unlock();
    s_->gate.ExitRead();
    s_ = nullptr;
  }
  void OnPagefault(uint64_t, const UffdEvent& ev) override { Message(ev); }
  bool OnFork(uint64_t, const UffdEvent& ev) override {
    Message(ev);  // the child's fd is ours (adopted, or recorded to be)
    return s_ != nullptr;
  }
  void OnRemap(uint64_t, const UffdEvent& ev) override { Message(ev); }
  void OnRemove(uint64_t, const UffdEvent& ev) override { Message(ev); }
  void OnUnmap(uint64_t, const UffdEvent& ev) override { Message(ev); }
  void OnUnknown(uint64_t, const UffdEvent& ev) override { Message(ev); }

  void OnReadError(uint64_t tag, const Status& error) override {
    SpacePtr s = e_->SpaceById(static_cast<uint32_t>(tag));
    if (s == nullptr) return;
    e_->Fail(error.WithContext("space " + std::to_string(tag)));
    std::lock_guard<std::mutex> lk(s->mu);
    if (!s->closed.load()) e_->MarkDeadLocked(*s);
  }

  void OnWatched(int fd, short revents) override {
    (void)revents;
    // The client never sends anything after the handshake: data is
    // discarded; end of stream or an error means it is gone.
    char buf[256];
    int got_fd = -1;
    Result<size_t> got = e_->env_->RecvWithFd(fd, buf, sizeof(buf), &got_fd);
    if (got_fd >= 0) e_->env_->Close(got_fd).IgnoreError();  // unexpected descriptor: drop it
    if (!got.ok() || *got == 0) {
      e_->Finish(Status::PeerGone("the client closed its connection"));
      e_->loop_->Stop();
    }
  }

  bool BeforePoll(Duration*) override { return e_->BeforePoll(); }

 private:
  void Message(const UffdEvent& ev) {
    if (s_ != nullptr) e_->OnMessageLocked(*s_, ev, read_at_);
  }

  Engine* e_;
  SpacePtr s_;
  Clock::time_point read_at_;
};

void Engine::ServerMain(const std::function<Status()>& setup, std::promise<Status>* ready) {
  if (opt_.private_fd_table) {
    // See "File descriptors" in engine.h. The private table starts as a
    // copy of the process's and keeps it: sources read through descriptors
    // the caller opened (pread, image files) from these threads. unshare is
    // a plain call on our own thread with nothing to inject, so it does not
    // go through Env.
    const Status unshared = sys::UnshareFdTable();
    if (!unshared.ok()) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        server_exited_ = true;
      }
      fork_.ServerExited();  // a fork's prepare handler may be waiting for us
      ready->set_value(unshared.WithContext("making the restore threads' fd table private"));
      return;
    }
    fd_base_ = PrivateFdBase();
  }
  Status st = setup ? setup() : Status::Ok();
  if (!st.ok()) {
    for (const SpacePtr& s : SnapshotSpaces()) CloseSpace(*s);
    {
      std::lock_guard<std::mutex> lk(mu_);
      server_exited_ = true;
    }
    fork_.ServerExited();
    ready->set_value(st);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    started_ = true;
    // A prefetch list is installed even without background fill: it was
    // asked for explicitly. The scheduler stops after it unless
    // background_on_.
    want_filler_ = opt_.fill.background_fill || !opt_.fill.prefetch.empty();
    background_on_.store(opt_.fill.background_fill);
  }
  ready->set_value(Status::Ok());  // `setup` and `ready` die with Start()'s frame
  LoopHandler handler(this);
  if (opt_.watch_fd >= 0) {
    const Status st = loop_->Watch(opt_.watch_fd, POLLIN);
    if (!st.ok()) {
      Fail(st);
      Finish(st);
    }
  }
  PW_PAUSE_POINT("engine.loop.start");
  const Status ran = finished() ? Status::Ok() : loop_->Run(&handler);
  if (!ran.ok()) {
    Fail(ran.WithContext("restore server poll"));
    Finish(ran);
  }
  if (fork_recording_) ApplyRecorded();  // stopped in the middle of a fork
  // Every userfaultfd is closed here, on the thread whose table holds it
  // (unless Export() takes them over).
  bool keep;
  {
    std::lock_guard<std::mutex> lk(mu_);
    keep = keep_uffds_;
  }
  if (!keep) {
    for (const SpacePtr& s : SnapshotSpaces()) CloseSpace(*s);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_exited_ = true;
  }
  fork_.ServerExited();
  cv_.notify_all();
}

bool Engine::BeforePoll() {
  if (stopping()) return false;
  // Register what is new (a root space, children from FORK events) before
  // anything else: a fork may be requested before the loop's first poll,
  // and its FORK message is only read from a registered source. Once a
  // fork was acknowledged nothing may allocate (AddUffd may), but then
  // nothing new can appear either: children are adopted after the fork.
  if (!fork_recording_) RegisterNewSpaces();
  if (!ForkStep()) return true;  // a fork is on: only read (and record)
  MaybeStartFiller();
  const std::vector<SpacePtr> spaces = SnapshotSpaces();
  // Faults read by any drain (ours or the filler's) are served here.
  ServeQueued(spaces);
  const bool any_open = CloseFinished(spaces);
  MaybeReportResident();
  if (opt_.watch_fd >= 0 && !any_open) {
    Finish(Status::PeerGone("every process of the client has exited"));
    return false;
  }
  RegisterNewSpaces();  // children adopted by ApplyRecorded or a drain
  return !stopping();
}

void Engine::RegisterNewSpaces() {
  for (const SpacePtr& s : SnapshotSpaces()) {
    if (std::find(looped_.begin(), looped_.end(), s->id) != looped_.end()) continue;
    std::lock_guard<std::mutex> lk(s->mu);
    if (!s->uffd.valid() || s->closed.load()) continue;
    const Status st = loop_->AddUffd(s->uffd.fd(), s->id);
    if (!st.ok()) {
      Fail(st);
      MarkDeadLocked(*s);
      continue;
    }
    looped_.push_back(s->id);
  }
}

void Engine::ServeQueued(const std::vector<SpacePtr>& spaces) {
  for (const SpacePtr& s : spaces) {
    for (;;) {
      QueuedFault f;
      {
        std::lock_guard<std::mutex> lk(s->mu);
        if (s->faults.empty() || s->closed.load()) break;
        f = s->faults.front();
        s->faults.pop_front();
      }
      ServeFault(*s, f);
    }
  }
}

bool Engine::CloseFinished(const std::vector<SpacePtr>& spaces) {
  // Close what is finished: dead spaces, and complete ones when asked to
  // release (every page is in place, so the kernel's zero-fill after
  // unregistering can only concern dropped or foreign pages, which read as
  // zero anyway). Spaces with bad pages stay: their faults must keep coming
  // to us to be poisoned, not zero-filled.
  bool any_open = false;
  for (const SpacePtr& s : spaces) {
    bool close = false;
    bool release = false;
    {
      std::lock_guard<std::mutex> lk(s->mu);
      if (!s->uffd.valid()) continue;
      const bool complete = s->map.unfilled() == 0 && s->map.bad() == 0 && s->faults.empty();
      close = s->dead || (opt_.release_when_resident && complete);
      release = close && !s->dead;
      if (close) s->released = release;
    }
    if (close) {
      // A released space was complete: residency is reported before it
      // closes. Reported after, an observer could see every space closed
      // and the restore not resident, and take a complete task for one
      // whose memory is gone (CRIU's daemon killed such a task at stop).
      if (release) MaybeReportResident();
      CloseSpace(*s);
      PW_PAUSE_POINT("engine.space.closed");  // tests: residency is already known
    } else {
      any_open = true;
    }
  }
  return any_open;
}

bool Engine::ForkStep() {
  constexpr size_t kForkEvents = 4096;
  if (!fork_.active()) return true;
  if (fork_.forking()) {
    if (!fork_recording_) {
      // Allocate everything now: the forking thread is still in its prepare
      // handler, waiting for our acknowledgement before glibc takes its
      // locks. From then until the fork returned the loop only polls and
      // reads (into its own mapping), and we only record.
      fork_events_.resize(kForkEvents);
      fork_event_space_.resize(kForkEvents);
      fork_count_ = 0;
      const Status st = loop_->Reserve(loop_->sources() + 2);
      if (!st.ok()) Fail(st);
      fork_.WaitFillerParked();  // nothing fills while we hold messages back
      fork_recording_ = true;
      fork_.ServerParked();
    }
    return false;
  }
  // The fork returned (kApplying): apply what was recorded, in order.
  if (fork_recording_) ApplyRecorded();
  return true;
}

void Engine::ApplyRecorded() {
  fork_recording_ = false;
  for (size_t k = 0; k < fork_count_;) {
    Space& s = *fork_event_space_[k];
    s.gate.EnterRead();
    {
      std::lock_guard<std::mutex> lk(s.mu);
      // The run of messages of this space (one batch or more).
      const Clock::time_point now = Clock::now();
      for (; k < fork_count_ && fork_event_space_[k] == &s; ++k) {
        OnMessageLocked(s, fork_events_[k], now);
      }
      s.Sync();
    }
    s.gate.ExitRead();
  }
  fork_count_ = 0;
  fork_.ServerApplied();
  cv_.notify_all();  // the filler may have work again
}

}  // namespace pagewise::restore
