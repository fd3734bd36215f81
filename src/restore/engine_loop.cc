// The engine's loop thread: polls every space's userfaultfd (plus the wake
// eventfd and a watched client socket), reads and applies messages, and
// serves demand faults itself. Fork mode (engine_fork.h) switches it to a
// read-only loop that does not allocate.
//
// Shaped after one poll/read/dispatch loop (what src/sys/uffd_loop will
// offer): PollOnce gathers the readable descriptors, DrainEvents reads a
// space's messages, ServeQueued handles the faults they carried.
#include <poll.h>

#include <algorithm>
#include <cerrno>

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
  ServerLoop();
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

void Engine::ServerLoop() {
  for (;;) {
    if (stopping()) return;
    if (fork_.active()) {
      ForkModeLoop();  // (also finishes a kApplying left by a stop)
      continue;
    }
    MaybeStartFiller();
    const std::vector<SpacePtr> spaces = SnapshotSpaces();
    // Faults read by any drain (ours or the filler's) are served here.
    ServeQueued(spaces);
    const bool any_open = CloseFinished(spaces);
    MaybeReportResident();
    if (opt_.watch_fd >= 0 && !any_open) {
      Finish(Status::PeerGone("every process of the client has exited"));
      return;
    }
    if (!PollOnce(spaces)) return;
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
    {
      std::lock_guard<std::mutex> lk(s->mu);
      if (!s->uffd.valid()) continue;
      const bool complete = s->map.unfilled() == 0 && s->map.bad() == 0 && s->faults.empty();
      close = s->dead || (opt_.release_when_resident && complete);
      if (close) s->released = !s->dead;
    }
    if (close) {
      CloseSpace(*s);
    } else {
      any_open = true;
    }
  }
  return any_open;
}

bool Engine::PollOnce(const std::vector<SpacePtr>& spaces) {
  std::vector<struct pollfd> pfds;
  std::vector<SpacePtr> polled;
  pfds.reserve(spaces.size() + 2);
  pfds.push_back({wake_fd_, POLLIN, 0});
  if (opt_.watch_fd >= 0) pfds.push_back({opt_.watch_fd, POLLIN, 0});
  const size_t first_uffd = pfds.size();
  for (const SpacePtr& s : spaces) {
    std::lock_guard<std::mutex> lk(s->mu);
    if (!s->uffd.valid() || s->closed.load()) continue;
    pfds.push_back({s->uffd.fd(), POLLIN, 0});
    polled.push_back(s);
  }
  Result<int> n = env_->Poll(pfds.data(), pfds.size(), -1);
  if (!n.ok()) {
    Fail(n.status().WithContext("restore server poll"));
    Finish(n.status());
    return false;
  }
  if (pfds[0].revents & POLLIN) {
    sys::DrainEventfd(wake_fd_);
  }
  if (opt_.watch_fd >= 0 && pfds[1].revents != 0) {
    // The client never sends anything after the handshake: data is
    // discarded; end of stream or an error means it is gone.
    char buf[256];
    int fd = -1;
    Result<size_t> got = env_->RecvWithFd(opt_.watch_fd, buf, sizeof(buf), &fd);
    if (fd >= 0) env_->Close(fd).IgnoreError();  // unexpected descriptor: drop it
    if (!got.ok() || *got == 0) {
      Finish(Status::PeerGone("the client closed its connection"));
      return false;
    }
  }
  for (size_t i = 0; i < polled.size(); ++i) {
    const short re = pfds[first_uffd + i].revents;
    if (re == 0) continue;
    Space& s = *polled[i];
    if (re & (POLLERR | POLLNVAL)) {
      std::lock_guard<std::mutex> lk(s.mu);
      if (!s.closed.load()) MarkDeadLocked(s);
      continue;
    }
    DrainEvents(s);
  }
  return true;
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
  fork_.ServerParked();
  // From here until the fork returned: poll, lock, read. Nothing allocates.
  // (The filler is parked, so the exclusive gate never waits for a fill.)
  while (fork_.forking() && !stopping()) {
    Result<int> n = env_->Poll(fork_pfds_.data(), fork_pfds_.size(), -1);
    if (!n.ok()) break;
    if (fork_pfds_[0].revents & POLLIN) {
      sys::DrainEventfd(wake_fd_);
    }
    for (size_t i = 0; i < fork_polled_.size(); ++i) {
      if ((fork_pfds_[i + 1].revents & POLLIN) == 0 || count == kForkEvents) continue;
      Space& s = *fork_polled_[i];
      s.gate.EnterRead();
      {
        std::lock_guard<std::mutex> lk(s.mu);
        if (s.uffd.valid()) {
          Result<size_t> got =
              s.uffd.ReadEvents(&fork_events_[count], std::min<size_t>(64, kForkEvents - count));
          if (got.ok()) {  // (an error is handled when normal service resumes)
            for (size_t k = 0; k < *got; ++k) fork_event_space_[count + k] = &s;
            count += *got;
          }
        }
      }
      s.gate.ExitRead();
    }
  }
  // Apply what was read, per space in order (as one batch each).
  const Clock::time_point now = Clock::now();
  std::vector<UffdEvent> batch;
  for (const SpacePtr& sp : fork_polled_) {
    Space& s = *sp;
    batch.clear();
    for (size_t k = 0; k < count; ++k) {
      if (fork_event_space_[k] == &s) batch.push_back(fork_events_[k]);
    }
    if (batch.empty()) continue;
    s.gate.EnterRead();
    {
      std::lock_guard<std::mutex> lk(s.mu);
      ApplyBatchLocked(s, batch.data(), batch.size(), now);
    }
    s.gate.ExitRead();
  }
  fork_polled_.clear();
  fork_.ServerApplied();
  cv_.notify_all();  // the filler may have work again
}

}  // namespace pagewise::restore
