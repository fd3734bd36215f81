// Engine lifecycle: construction, spaces, start and stop, waiting, residency
// and the small helpers the parts share. The loop thread is in
// engine_loop.cc, events in engine_events.cc, filling in fill.cc.
#include "restore/engine.h"

#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <thread>
#include <utility>

#include "base/clock.h"
#include "sys/fd_util.h"

namespace pagewise::restore {

int Engine::Relocate(int fd) {
  // A userfaultfd must be O_NONBLOCK to be polled (its poll reports POLLERR
  // otherwise). A client may hand us a blocking one, and a child's fd from a
  // FORK event inherits the flags the parent's was created with. O_NONBLOCK
  // is a flag of the shared open file; the client never reads the fd, so
  // changing it is invisible to it.
  sys::EnsureNonblocking(fd);
  if (fd_base_ < 0 || fd < 0 || fd >= fd_base_) return fd;
  // The number is only ours in the private table: move it up (see
  // PrivateFdBase), without tools seeing a close in the process's table.
  return sys::MoveFdAtOrAbove(fd, fd_base_);
}

Engine::Engine(std::shared_ptr<const PageSource> source, EngineOptions options)
    : source_(std::move(source)),
      opt_(std::move(options)),
      env_(opt_.env ? opt_.env : Env::Default()),
      page_size_(PageSize()),
      stats_(page_size_, opt_.fill.max_latency_samples, opt_.fill.record_trace),
      // (The policy was validated by the caller: ValidateFillPolicy.)
      sched_(page_size_, opt_.fill.fault_window_pages, opt_.fill.background_batch_pages,
             &opt_.fill.prefetch, opt_.fill.background_fill && !opt_.fill.record_trace),
      installer_(this, &stats_, page_size_) {
  for (uint64_t off : opt_.fill.prefetch) prefetch_set_.insert(off & ~(page_size_ - 1));
  piece_pages_ = sched_.batch();
  // A remote source starts fetching the working set now, in parallel.
  if (!opt_.fill.prefetch.empty()) source_->WillNeed(opt_.fill.prefetch, ReadPriority::kPrefetch);
}

Engine::~Engine() { Stop(); }

void Engine::AddSpace(sys::Userfaultfd uffd, const std::vector<SpaceRegion>& regions) {
  auto s = std::make_shared<Space>();
  s->map = SpaceMap(page_size_);
  const uint64_t features = uffd.features();
  s->uffd = sys::Userfaultfd::Adopt(Relocate(uffd.Release()), features, env_);
  uint64_t pages = 0;
  for (const SpaceRegion& r : regions) {
    s->map.Add(r.addr, r.len, r.src);
    pages += r.len / page_size_;
  }
  s->Sync();  // not shared yet: no lock needed
  {
    std::lock_guard<std::mutex> lk(mu_);
    s->id = next_id_++;
    spaces_.push_back(std::move(s));
  }
  stats_.SpaceAdded(pages);
}

Status Engine::Start(std::function<Status()> setup) {
  sys::UffdLoop::Options lo;
  lo.capacity = 16;
  PW_ASSIGN_OR_RETURN(loop_, sys::UffdLoop::Create(env_, lo));
  if (!adopted_) stats_.SetStart(Clock::now());
  if (opt_.private_fd_table) {
    // In-process: the program may fork while we serve (see fork_guard.h).
    // Registered before the loop thread exists, so that no fork can slip
    // between the ranges being registered and the guard knowing us (a fork
    // meanwhile simply waits for the loop thread to reach its loop).
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

void Engine::MaybeStartFiller() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!want_filler_ || stopping_ || filler_ != nullptr) return;
  // Started from the loop thread so that it shares its fd table.
  fork_.SetFillerRunning(true);
  filler_ = std::make_unique<std::thread>([this] {
    FillerLoop();
    fork_.SetFillerRunning(false);
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
  fork_.Shutdown();
  Notify();
  if (server_ != nullptr && server_->joinable()) server_->join();  // it closes every uffd
  if (filler_ != nullptr && filler_->joinable()) filler_->join();
  server_.reset();
  filler_.reset();
  // loop_ stays until destruction: a late Notify() (EnableBackground racing
  // Stop) then only writes to an eventfd nobody polls.
}

void Engine::Notify() {
  if (loop_ != nullptr) loop_->Wake();
}

bool Engine::stopping() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stopping_;
}

std::vector<SpacePtr> Engine::SnapshotSpaces() const {
  std::lock_guard<std::mutex> lk(mu_);
  return spaces_;
}

SpacePtr Engine::SpaceById(uint32_t id) const {
  std::lock_guard<std::mutex> lk(mu_);
  for (const SpacePtr& s : spaces_) {
    if (s->id == id) return s;
  }
  return nullptr;
}

void Engine::MarkDeadLocked(Space& s) {
  s.dead = true;
  s.closed.store(true);
  s.faults.clear();
  Notify();  // the loop thread closes the fd and re-checks residency
}

void Engine::CloseSpace(Space& s) {
  // (On the loop thread, or after it ended: the loop forgets the fd first.)
  if (loop_ != nullptr) loop_->RemoveUffd(s.id);
  looped_.erase(std::remove(looped_.begin(), looped_.end(), s.id), looped_.end());
  s.gate.EnterRead();  // no fill may use the fd while it closes
  uint64_t unplanned = 0;
  {
    std::unique_lock<std::mutex> lk(s.mu);
    if (s.uffd.valid() && !s.dead && s.map.bad() > 0) {
      // Closing unregisters the ranges, after which the kernel would
      // zero-fill the pages the source could not give. Poison them first: a
      // poisoned pte raises SIGBUS whether or not the range is still
      // registered.
      std::vector<uint64_t> bad;
      s.map.PagesIn(PageState::kBad, &bad);
      lk.unlock();  // Poison takes mu itself when it must
      for (uint64_t page : bad) {
        for (int attempt = 0; attempt < 8 && installer_.Poison(s, page, GateUse::kHeldExclusive);
             ++attempt) {
        }
      }
      lk.lock();
    }
    s.closed.store(true);
    s.uffd = sys::Userfaultfd();  // closes the fd
    // Every prefetch entry counts as installed or as waste, also those the
    // filler never planned: the space completed first (faults and
    // read-ahead got there), or it closed before it did.
    unplanned = sched_.DropUnplannedPrefetch(s.sched);
  }
  if (unplanned > 0) stats_.Add(&RestoreStats::prefetch_waste_entries, unplanned);
  s.gate.ExitRead();
  s.inflight_done.notify_all();  // a fault waiting for a piece: the space is gone
}

void Engine::Fail(const Status& status) {
  std::lock_guard<std::mutex> lk(mu_);
  if (status_.ok()) status_ = status;
}

void Engine::Backoff(int* spins) {
  // EAGAIN/ENOENT with nothing to read: the event was read (by us or the
  // other thread) but the thread that caused it has not yet run to clear
  // the kernel's mmap_changing count. Let it run, holding nothing.
  if (++*spins < 64) {
    std::this_thread::yield();
    return;
  }
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, std::chrono::milliseconds(1), [&] { return stopping_; });
}

void Engine::Finish(const Status& why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    finished_ = true;
    stopping_ = true;
    if (status_.ok() && !why.ok()) status_ = why;
  }
  cv_.notify_all();
  fork_.Shutdown();
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
  stats_.Resident(Clock::now());
  cv_.notify_all();
  if (opt_.on_resident) opt_.on_resident(st, Stats());
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
  RestoreStats out = stats_.Snapshot();
  if (!forked_copy_.load()) {  // (in a forked copy mu_ may be held forever)
    std::lock_guard<std::mutex> lk(mu_);
    out.spaces_live = 0;
    for (const SpacePtr& s : spaces_) {
      if (!s->closed.load()) out.spaces_live++;
    }
  }
  return out;
}

WorkingSetTrace Engine::Trace() const {
  WorkingSetTrace t;
  t.page_size = static_cast<uint32_t>(page_size_);
  t.source_size = source_->size();
  t.entries = stats_.TraceEntries();
  return t;
}

// ---- fork(2) of the restored program (fork_guard.h) ----------------------

void Engine::EnterForkMode() {
  fork_.Request([this] {
    {
      std::lock_guard<std::mutex> lk(mu_);  // so that an idle filler cannot miss it
    }
    cv_.notify_all();
    Notify();  // the loop thread, if in poll
  });
}

void Engine::LeaveForkMode() {
  fork_.Release([this] {
    { std::lock_guard<std::mutex> lk(mu_); }
    cv_.notify_all();
    Notify();
  });
}

void Engine::BecomeForkedCopy() { forked_copy_.store(true); }

}  // namespace pagewise::restore
