// Engine lifecycle, the server and filler threads, and the spaces.
// Filling lives in fill.cc; events and fork mode in engine_events.cc.
#include "restore/engine.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include "base/clock.h"

namespace pagewise::restore {
namespace {

// A userfaultfd must be O_NONBLOCK to be polled (its poll reports POLLERR
// otherwise). A client may hand us a blocking one, and a child's fd from a
// FORK event inherits the flags the parent's was created with. O_NONBLOCK
// is a flag of the shared open file; the client never reads the fd, so
// changing it is invisible to it. (fcntl is a plain libc call: nothing to
// inject here.)
void EnsureNonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Where an engine's private descriptors go. Their numbers mean nothing in
// the process's table, but tools that track descriptors by number (TSan)
// cannot tell the tables apart: keep ours away from the low numbers the
// program uses, and engines away from each other (slots of 256 in the
// upper half of the descriptor limit). -1: leave numbers as they are.
int PrivateFdBase() {
  static std::atomic<unsigned> next_slot{0};
  struct rlimit rl = {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return -1;
  const uint64_t limit = std::min<uint64_t>(rl.rlim_cur, 1 << 20);
  if (limit < 2048) return -1;
  const uint64_t slots = (limit / 2) / 256;
  return static_cast<int>(limit / 2 + (next_slot++ % slots) * 256);
}

}  // namespace

int Engine::Relocate(int fd) {
  if (fd_base_ < 0 || fd < 0 || fd >= fd_base_) return fd;
  const int moved = fcntl(fd, F_DUPFD_CLOEXEC, fd_base_);
  if (moved < 0) return fd;  // no room up there: keep the number we have
  // close_range rather than close: the number is only ours in this table,
  // and descriptor-tracking tools must not see it closed in the process's.
  close_range(static_cast<unsigned>(fd), static_cast<unsigned>(fd), 0);
  return moved;
}

Engine::Engine(std::shared_ptr<const PageSource> source, EngineOptions options)
    : source_(std::move(source)), opt_(std::move(options)) {
  env_ = opt_.env ? opt_.env : Env::Default();
  page_size_ = PageSize();
  for (uint64_t off : opt_.fill.prefetch) prefetch_set_.insert(off & ~(page_size_ - 1));
}

Engine::~Engine() { Stop(); }

void Engine::AddSpace(sys::Userfaultfd uffd, const std::vector<SpaceRegion>& regions) {
  auto s = std::make_shared<Space>();
  s->map = SpaceMap(page_size_);
  EnsureNonblocking(uffd.fd());
  const uint64_t features = uffd.features();
  s->uffd = sys::Userfaultfd::Adopt(Relocate(uffd.Release()), features, env_);
  uint64_t pages = 0;
  for (const SpaceRegion& r : regions) {
    s->map.Add(r.addr, r.len, r.src);
    pages += r.len / page_size_;
  }
  SyncLocked(*s);  // not shared yet: no lock needed
  {
    std::lock_guard<std::mutex> lk(mu_);
    s->id = next_id_++;
    spaces_.push_back(std::move(s));
  }
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.pages_total += pages;
  stats_.spaces_total++;
}

Status Engine::Start(std::function<Status()> setup) {
  PW_ASSIGN_OR_RETURN(wake_fd_, env_->EventfdCreate(0, EFD_NONBLOCK));
  start_ = Clock::now();
  if (opt_.private_fd_table) {
    // In-process: the program may fork while we serve (see fork_guard.h).
    // Registered before the server thread exists, so that no fork can slip
    // between the ranges being registered and the guard knowing us (a fork
    // meanwhile simply waits for the server thread to reach its loop).
    registered_for_fork_ = RegisterForFork(this);
    if (!registered_for_fork_) {
      Stop();
      return Status(Code::kResourceExhausted, 0,
                    "too many live in-process restores (finish some before starting more)");
    }
  }
  std::promise<Status> ready;
  std::future<Status> started = ready.get_future();
  server_ = std::make_unique<std::thread>([this, &setup, &ready] { ServerMain(setup, &ready); });
  Status st = started.get();
  if (!st.ok()) Stop();
  return st;
}

void Engine::ServerMain(const std::function<Status()>& setup, std::promise<Status>* ready) {
  if (opt_.private_fd_table) {
    // See "File descriptors" in engine.h. The private table starts as a
    // copy of the process's and keeps it: sources read through descriptors
    // the caller opened (pread, image files) from these threads. unshare is
    // a plain libc call on our own thread with nothing to inject, so it does
    // not go through Env.
    if (unshare(CLONE_FILES) != 0) {
      const int err = errno;
      {
        std::lock_guard<std::mutex> lk(mu_);
        server_exited_ = true;
      }
      cv_.notify_all();
      ready->set_value(ErrnoStatus(err, "unshare(CLONE_FILES) for the restore threads"));
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
    cv_.notify_all();  // a fork's prepare handler may be waiting for us
    ready->set_value(st);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    started_ = true;
    // A prefetch list is installed even without background fill: it was
    // asked for explicitly. PlanLocked stops after it unless background_on_.
    want_filler_ = opt_.fill.background_fill || !opt_.fill.prefetch.empty();
    background_on_.store(opt_.fill.background_fill);
  }
  ready->set_value(Status::Ok());  // `setup` and `ready` die with Start()'s frame
  ServerLoop();
  // Every userfaultfd is closed here, on the thread whose table holds it.
  for (const SpacePtr& s : SnapshotSpaces()) CloseSpace(*s);
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_exited_ = true;
  }
  cv_.notify_all();
}

void Engine::MaybeStartFiller() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!want_filler_ || stopping_ || filler_ != nullptr) return;
  // Started from the server thread so that it shares its fd table.
  filler_running_ = true;
  filler_ = std::make_unique<std::thread>([this] {
    FillerLoop();
    {
      std::lock_guard<std::mutex> l(mu_);
      filler_running_ = false;
    }
    cv_.notify_all();
  });
}

void Engine::EnableBackground() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!started_ || stopping_) return;
    want_filler_ = true;
    background_on_.store(true);
    // An idle filler (prefetch done, background off) waits for new work.
    work_epoch_++;
    cv_.notify_all();
  }
  Notify();
}

void Engine::Stop() {
  if (forked_copy_.load()) {
    // In a forked child: the threads and the userfaultfds (which lived in
    // the parent's private fd table) do not exist here. Drop everything
    // without touching it; the numbers would name other files here.
    // Locks are not taken either: a parent's thread may have held one at
    // the moment of fork, and the child is single-threaded anyway.
    (void)server_.release();
    (void)filler_.release();
    for (const SpacePtr& s : spaces_) {
      (void)s->uffd.Release();
      s->closed.store(true);
    }
    return;
  }
  // Unregister first: a fork in progress finishes (with our help) before
  // the threads go away.
  if (registered_for_fork_) {
    UnregisterForFork(this);
    registered_for_fork_ = false;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (wake_fd_ >= 0) Notify();
  if (server_ != nullptr && server_->joinable()) server_->join();  // it closes every uffd
  if (filler_ != nullptr && filler_->joinable()) filler_->join();
  server_.reset();
  filler_.reset();
  if (wake_fd_ >= 0) {
    env_->Close(wake_fd_).IgnoreError();  // teardown: nothing to do on failure
    wake_fd_ = -1;
  }
}

void Engine::Notify() { eventfd_write(wake_fd_, 1); }

std::vector<Engine::SpacePtr> Engine::SnapshotSpaces() const {
  std::lock_guard<std::mutex> lk(mu_);
  return spaces_;
}

void Engine::SyncLocked(Space& s) {
  s.unfilled.store(s.map.unfilled());
  s.bad.store(s.map.bad());
}

void Engine::MarkDeadLocked(Space& s, const char* why) {
  (void)why;
  s.dead = true;
  s.closed.store(true);
  s.faults.clear();
  if (wake_fd_ >= 0) Notify();  // the server thread closes the fd and re-checks residency
}

void Engine::CloseSpace(Space& s) {
  std::unique_lock<std::mutex> lk(s.mu);
  if (s.uffd.valid() && !s.dead && s.map.bad() > 0) {
    // Closing unregisters the ranges, after which the kernel would zero-fill
    // the pages the source could not give. Poison them first: a poisoned
    // pte raises SIGBUS whether or not the range is still registered.
    std::vector<uint64_t> bad;
    s.map.PagesIn(PageState::kBad, &bad);
    for (uint64_t page : bad) {
      for (int attempt = 0; attempt < 8 && PoisonLocked(s, lk, page); ++attempt) {
      }
    }
  }
  s.closed.store(true);
  s.uffd = sys::Userfaultfd();  // closes the fd
}

void Engine::Fail(const Status& status) {
  std::lock_guard<std::mutex> lk(mu_);
  if (status_.ok()) status_ = status;
}

void Engine::AdoptForkLocked(Space& parent, int child_fd) {
  if (child_fd < 0) return;
  EnsureNonblocking(child_fd);
  auto child = std::make_shared<Space>();
  child->uffd = sys::Userfaultfd::Adopt(Relocate(child_fd), parent.uffd.features(), env_);
  child->map = parent.map;
  child->cursor = parent.cursor;
  child->prefetch_pos = parent.prefetch_pos;
  SyncLocked(*child);
  {
    std::lock_guard<std::mutex> lk(mu_);
    child->id = next_id_++;
    spaces_.push_back(std::move(child));
    work_epoch_++;
  }
  cv_.notify_all();
  Notify();  // the server thread must start polling the child's fd
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.spaces_total++;
}

void Engine::Finish(const Status& why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    finished_ = true;
    stopping_ = true;
    if (status_.ok() && !why.ok()) status_ = why;
  }
  cv_.notify_all();
  for (const SpacePtr& s : SnapshotSpaces()) CloseSpace(*s);
  if (opt_.on_finished) opt_.on_finished(why);
}

void Engine::MaybeReportResident() {
  Status st;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (resident_reported_ || stopping_ || spaces_.empty()) return;
    bool any_live = false;
    for (const SpacePtr& s : spaces_) {
      const bool dead = s->closed.load() && s->unfilled.load() > 0;
      if (dead) continue;
      if (s->unfilled.load() > 0) return;
      any_live = true;
    }
    if (!any_live) return;
    resident_ = true;
    resident_reported_ = true;
    st = status_;
  }
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.resident_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count();
  }
  cv_.notify_all();
  if (opt_.on_resident) opt_.on_resident(st, Stats());
}

void Engine::ServerLoop() {
  std::vector<struct pollfd> pfds;
  std::vector<SpacePtr> polled;
  for (;;) {
    bool fork_mode;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      fork_mode = fork_phase_ != ForkPhase::kNone;
    }
    if (fork_mode) {
      ForkModeLoop();  // (also finishes a kApplying left by a stop)
      continue;
    }
    MaybeStartFiller();
    std::vector<SpacePtr> spaces = SnapshotSpaces();
    // Faults read by any drain (ours or the filler's) are served here.
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
    // Close what is finished: dead spaces, and complete ones when asked to
    // release (every page is in place, so the kernel's zero-fill after
    // unregistering can only concern dropped or foreign pages, which read
    // as zero anyway). Spaces with bad pages stay: their faults must keep
    // coming to us to be poisoned, not zero-filled.
    bool any_open = false;
    for (const SpacePtr& s : spaces) {
      std::lock_guard<std::mutex> lk(s->mu);
      if (!s->uffd.valid()) continue;
      const bool complete = s->map.unfilled() == 0 && s->map.bad() == 0 && s->faults.empty();
      if (s->dead || (opt_.release_when_resident && complete)) {
        s->released = !s->dead;
        s->closed.store(true);
        s->uffd = sys::Userfaultfd();
        continue;
      }
      any_open = true;
    }
    MaybeReportResident();
    if (opt_.watch_fd >= 0 && !any_open) {
      Finish(Status::PeerGone("every process of the client has exited"));
      return;
    }

    pfds.clear();
    polled.clear();
    pfds.push_back({wake_fd_, POLLIN, 0});
    if (opt_.watch_fd >= 0) pfds.push_back({opt_.watch_fd, POLLIN, 0});
    const size_t first_uffd = pfds.size();
    for (const SpacePtr& s : spaces) {
      std::lock_guard<std::mutex> lk(s->mu);
      if (!s->uffd.valid()) continue;
      pfds.push_back({s->uffd.fd(), POLLIN, 0});
      polled.push_back(s);
    }
    Result<int> n = env_->Poll(pfds.data(), pfds.size(), -1);
    if (!n.ok()) {
      Fail(n.status().WithContext("restore server poll"));
      Finish(n.status());
      return;
    }
    if (pfds[0].revents & POLLIN) {
      eventfd_t v;
      eventfd_read(wake_fd_, &v);
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
        return;
      }
    }
    for (size_t i = 0; i < polled.size(); ++i) {
      const short re = pfds[first_uffd + i].revents;
      if (re == 0) continue;
      Space& s = *polled[i];
      std::lock_guard<std::mutex> lk(s.mu);
      if (!s.uffd.valid() || s.closed.load()) continue;
      if (re & (POLLERR | POLLNVAL)) {
        MarkDeadLocked(s, "poll error");
        continue;
      }
      DrainLocked(s);
    }
  }
}

void Engine::FillerLoop() {
  for (;;) {
    ParkForFork();
    uint64_t epoch;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      epoch = work_epoch_;
    }
    const bool did = FillOnce();
    if (!last_fill_prefetch_) {
      // The filler plans prefetch runs first; a plan without any means the
      // whole prefetch list was installed (or nothing is left to fill).
      bool first = false;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!prefetch_done_) {
          prefetch_done_ = true;
          first = true;
          cv_.notify_all();
        }
      }
      if (first && !opt_.fill.prefetch.empty() && opt_.on_prefetched) opt_.on_prefetched();
    }
    MaybeReportResident();
    if (!did) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(
          lk, [&] { return stopping_ || work_epoch_ != epoch || fork_phase_ != ForkPhase::kNone; });
    }
  }
}

Status Engine::WaitResident(Duration timeout) {
  if (forked_copy_.load()) {
    return Status::FailedPrecondition(
        "this is a forked copy of a restore: it is served by the parent's restore");
  }
  std::unique_lock<std::mutex> lk(mu_);
  auto done = [&] { return resident_ || finished_ || stopping_; };
  if (!WaitFor(cv_, lk, timeout, done)) {
    return Status::Timeout("restore not yet resident after " + DurationText(timeout) +
                           "; wait again or check stats() for progress");
  }
  if (resident_) return status_;
  if (!status_.ok()) return status_;
  return Status::FailedPrecondition("restore stopped before every page was resident");
}

Status Engine::WaitPrefetched(Duration timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  auto done = [&] {
    return opt_.fill.prefetch.empty() || !want_filler_ || prefetch_done_ || resident_ ||
           finished_ || stopping_;
  };
  if (!WaitFor(cv_, lk, timeout, done)) {
    return Status::Timeout("prefetch not yet installed after " + DurationText(timeout));
  }
  return status_;
}

bool Engine::resident() const {
  std::lock_guard<std::mutex> lk(mu_);
  return resident_;
}

bool Engine::finished() const {
  std::lock_guard<std::mutex> lk(mu_);
  return finished_;
}

Status Engine::status() const {
  std::lock_guard<std::mutex> lk(mu_);
  return status_;
}

RestoreStats Engine::Stats() const {
  RestoreStats out;
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    out = stats_;
  }
  if (!forked_copy_.load()) {  // (in a forked copy mu_ may be held forever)
    std::lock_guard<std::mutex> lk(mu_);
    out.spaces_live = 0;
    for (const SpacePtr& s : spaces_) {
      if (!s->closed.load()) out.spaces_live++;
    }
  }
  if (!out.fault_latency_ns.empty()) {
    std::vector<uint32_t> v = out.fault_latency_ns;
    auto pct = [&](double p) {
      const size_t k =
          std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
      std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
      return static_cast<uint64_t>(v[k]);
    };
    out.fault_latency_p50_ns = pct(0.50);
    out.fault_latency_p99_ns = pct(0.99);
  }
  return out;
}

WorkingSetTrace Engine::Trace() const {
  WorkingSetTrace t;
  t.page_size = static_cast<uint32_t>(page_size_);
  t.source_size = source_->size();
  std::lock_guard<std::mutex> lk(stats_mu_);
  t.entries = trace_;
  return t;
}

}  // namespace pagewise::restore
