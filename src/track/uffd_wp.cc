// Backend uffd-wp: synchronous userfaultfd write-protect faults served by a
// tracker thread (see uffd_wp_tracker.h for the protocol and its reasons).
//
// Memory events, as measured on Linux 6.18 (tests in tracker_test.cc):
//   - MADV_DONTNEED (anonymous) drops ptes and their uffd-wp markers; later
//     writes there raise no fault. Collect's sweep finds those pages (empty
//     ptes and whole zapped page tables read as "written" on PAGEMAP_SCAN's
//     fast path, and as entries without bit 57 in /proc/self/pagemap),
//     reports them and write-protects them again.
//   - MADV_REMOVE (shmem) leaves uffd-wp markers in place: the madvise
//     interposer (memory_events.h) marks those pages written. Without the
//     interposer, Track() refuses shared and file-backed memory (naming
//     uffd-wp-async, which sees those drops by itself).
//   - munmap/mremap: as uffd-wp-async; a re-protect that finds the memory
//     gone is not an error.
//   - fork: the child's VMAs are not registered (no EVENT_FORK) and its ptes
//     lose the uffd-wp bit; the parent's write faults still come to us.
//
// This file: lifecycle, Track/Untrack, the tracker thread and the factory;
// Collect and its sweep are in uffd_wp_collect.cc (uffd_wp_impl.h).
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sys/pagemap.h"
#include "sys/process.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"
#include "track/memory_events.h"
#include "track/track_internal.h"
#include "track/uffd_wp_impl.h"
#include "track/uffd_wp_tracker.h"

namespace pagewise::track_internal {

UffdWpTrackerImpl::UffdWpTrackerImpl(Env* env, sys::Userfaultfd uffd,
                                     std::unique_ptr<sys::UffdLoop> loop, FaultState* fs,
                                     std::optional<sys::PagemapScanner> scanner, int pagemap_fd,
                                     bool unpopulated)
    : env_(env),
      uffd_(std::move(uffd)),
      loop_(std::move(loop)),
      fs_(fs),
      scanner_(std::move(scanner)),
      pagemap_fd_(pagemap_fd),
      wp_unpopulated_(unpopulated),
      pid_(sys::SelfPid()) {}

void UffdWpTrackerImpl::Start() {
  thread_ = std::make_unique<std::thread>([this] { Run(); });
  std::unique_lock<std::mutex> lock(start_mu_);
  start_cv_.wait(lock, [this] { return started_; });
  RegisterMemoryEventListener(this);
}

UffdWpTrackerImpl::~UffdWpTrackerImpl() {
  UnregisterMemoryEventListener(this);
  if (sys::SelfPid() != pid_) {
    // A forked child: the thread does not exist here, and the fds are
    // shared with the parent's tracker (waking the loop or unregistering
    // would break the parent). Leak the thread handle; close our copies.
    (void)thread_.release();  // intentional leak: no thread to join here
    child_ = true;
    CloseFds();
    return;
  }
  {
    std::lock_guard<std::mutex> api(api_mu_);
    // Unregistering clears write protection and wakes blocked writers.
    for (const auto& r : ranges_) uffd_.Unregister(r->start, r->end - r->start).IgnoreError();
  }
  loop_->Stop();
  if (thread_) thread_->join();
  {
    std::lock_guard<std::mutex> api(api_mu_);
    std::lock_guard<std::mutex> lock(fs_->mu);
    ranges_.clear();
  }
  CloseFds();
}

// uffd-wp-async sees the drops this backend cannot through UFFD_EVENT_REMOVE
// (drop_events.h).
Status UffdWpTrackerImpl::CheckDropsVisible(const std::vector<Vma>& vmas, uint64_t start,
                                            uint64_t end) {
  if (InterposersLinked()) return Status::Ok();
  for (const Vma& v : vmas) {
    if (v.anonymous_private()) continue;
    return Status(Code::kNotSupported, 0,
                  "Track " + RangeString(start, end) + ": backend uffd-wp cannot see " +
                      "MADV_REMOVE/MADV_DONTNEED drops of shared or file-backed memory (" +
                      (v.path.empty() ? std::string("shared anonymous") : v.path) +
                      ") without libpagewise-interpose: use backend uffd-wp-async (it sees " +
                      "them through UFFD_EVENT_REMOVE), or link libpagewise-interpose " +
                      "(pkg-config --libs pagewise-interpose, CMake pagewise::interpose)");
  }
  return Status::Ok();
}

void UffdWpTrackerImpl::SetFaultHook(std::function<void(uint64_t)> hook) {
  std::lock_guard<std::mutex> lock(fs_->mu);
  hook_ = std::move(hook);
}

Status UffdWpTrackerImpl::Track(void* addr, size_t len) {
  PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Track"));
  PW_RETURN_IF_ERROR(CheckProcess("Track"));
  const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
  std::lock_guard<std::mutex> api(api_mu_);
  PW_RETURN_IF_ERROR(CheckNoOverlap(TrackedLocked(), start, end));
  PW_RETURN_IF_ERROR(CheckOwnMemory(start, end));
  PW_ASSIGN_OR_RETURN(std::vector<Vma> vmas, CoveringVmas(env_, start, end, "Track"));
  PW_RETURN_IF_ERROR(
      TrackPageSize(env_, vmas, start, end, /*hugetlb_ok=*/false, "uffd-wp").status());
  PW_RETURN_IF_ERROR(CheckDropsVisible(vmas, start, end));
  auto range = std::make_unique<Range>();
  range->start = start;
  range->end = end;
  PW_ASSIGN_OR_RETURN(range->bits, PageBitmap::Create(env_, len / PageSize()));
  PW_ASSIGN_OR_RETURN(range->scratch, PageBitmap::Create(env_, len / PageSize()));
  PW_ASSIGN_OR_RETURN(range->extra, PageBitmap::Create(env_, len / PageSize()));
  if (!wp_unpopulated_) ReadFault(start, end);
  Status s = uffd_.Register(start, len, sys::kRegisterWp);
  if (!s.ok()) return RegisterError(s, start, end, vmas, "uffd-wp");
  // Publish the range before protecting it: a fault that arrives right
  // after UFFDIO_WRITEPROTECT must find the range to record the write.
  Range* raw = range.get();
  {
    std::lock_guard<std::mutex> lock(fs_->mu);
    InsertSorted(std::move(range));
  }
  s = uffd_.WriteProtect(start, len, /*wp=*/true);
  if (!s.ok()) {
    // Unregister first: it clears any protection the failed call left and
    // wakes faulters, so nothing stays half-protected.
    uffd_.Unregister(start, len).IgnoreError();  // the original error matters more
    std::unique_ptr<Range> gone = RemoveRange(raw);
    return s.WithContext("Track " + RangeString(start, end) + ": write-protecting the range");
  }
  return Status::Ok();
}

Status UffdWpTrackerImpl::Untrack(void* addr, size_t len) {
  PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Untrack"));
  PW_RETURN_IF_ERROR(CheckProcess("Untrack"));
  const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
  std::lock_guard<std::mutex> api(api_mu_);
  Range* r = nullptr;
  for (const auto& x : ranges_) {
    if (x->start == start && x->end == end) r = x.get();
  }
  if (r == nullptr) return NotTracked(start, end, TrackedLocked());
  Status s = uffd_.Unregister(start, len);
  // EINVAL: our memory was unmapped (and maybe replaced by memory that
  // cannot be registered); no VMA left. The contract allows both.
  if (!s.ok() && (s.err() == EINVAL || s.err() == ENOMEM)) s = Status::Ok();
  if (!s.ok()) return s.WithContext("Untrack " + RangeString(start, end));
  std::unique_ptr<Range> gone = RemoveRange(r);  // its bitmaps unmap after the lock
  return Status::Ok();
}

TrackerStats UffdWpTrackerImpl::stats() const {
  std::lock_guard<std::mutex> api(api_mu_);
  TrackerStats st = stats_;
  std::lock_guard<std::mutex> lock(fs_->mu);
  st.faults_handled = fs_->faults;
  return st;
}

std::vector<PageRange> UffdWpTrackerImpl::tracked() const {
  std::lock_guard<std::mutex> api(api_mu_);
  return TrackedLocked();
}

void UffdWpTrackerImpl::OnDropped(uint64_t start, uint64_t end) {
  if (sys::SelfPid() != pid_) return;
  std::lock_guard<std::mutex> lock(fs_->mu);
  const uint64_t page = PageSize();
  for (const auto& r : ranges_) {
    uint64_t s = std::max(start, r->start), e = std::min(end, r->end);
    if (s < e) r->bits.SetRange((s - r->start) / page, (e - r->start) / page);
  }
}

Status UffdWpTrackerImpl::CheckProcess(const char* op) const {
  if (sys::SelfPid() == pid_) return Status::Ok();
  return Status::FailedPrecondition(std::string(op) +
                                    ": this tracker belongs to the parent process; a forked "
                                    "child is not tracked (create a new Tracker in the child)");
}

std::vector<PageRange> UffdWpTrackerImpl::TrackedLocked() const {
  std::vector<PageRange> out;
  for (const auto& r : ranges_) out.push_back({r->start, r->end});
  return out;
}

Status UffdWpTrackerImpl::CheckOwnMemory(uint64_t start, uint64_t end) const {
  std::vector<PageRange> own = {
      thread_stack_,
      {reinterpret_cast<uint64_t>(fs_), reinterpret_cast<uint64_t>(fs_) + PageSize()}};
  for (const PageRange& m : loop_->memory()) own.push_back(m);
  for (const auto& r : ranges_) {
    own.push_back(r->bits.mapping());
    own.push_back(r->scratch.mapping());
    own.push_back(r->extra.mapping());
  }
  for (const PageRange& o : own) {
    if (o.start < end && start < o.end) {
      return Status::InvalidArgument(
          "Track " + RangeString(start, end) + ": overlaps the uffd-wp tracker's own memory " +
          RangeString(o.start, o.end) +
          " (its thread stack or bitmaps), which must not be write-protected; leave it out");
    }
  }
  return Status::Ok();
}

void UffdWpTrackerImpl::InsertSorted(std::unique_ptr<Range> r) {
  auto it =
      std::lower_bound(ranges_.begin(), ranges_.end(), r->start,
                       [](const std::unique_ptr<Range>& a, uint64_t s) { return a->start < s; });
  ranges_.insert(it, std::move(r));
}

std::unique_ptr<UffdWpTrackerImpl::Range> UffdWpTrackerImpl::RemoveRange(Range* r) {
  std::lock_guard<std::mutex> lock(fs_->mu);
  for (auto it = ranges_.begin(); it != ranges_.end(); ++it) {
    if (it->get() == r) {
      std::unique_ptr<Range> out = std::move(*it);
      ranges_.erase(it);
      return out;
    }
  }
  return nullptr;
}

UffdWpTrackerImpl::Range* UffdWpTrackerImpl::FindLocked(uint64_t addr) const {
  auto it =
      std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                       [](uint64_t a, const std::unique_ptr<Range>& r) { return a < r->start; });
  if (it == ranges_.begin()) return nullptr;
  Range* r = (it - 1)->get();
  return addr < r->end ? r : nullptr;
}

// The load is atomic (relaxed): program threads may be writing the page.
void UffdWpTrackerImpl::ReadFault(uint64_t start, uint64_t end) {
  for (uint64_t a = start; a < end; a += PageSize()) {
    (void)__atomic_load_n(reinterpret_cast<const char*>(a), __ATOMIC_RELAXED);
  }
}

void UffdWpTrackerImpl::CloseFds() {
  if (pagemap_fd_ >= 0) env_->Close(pagemap_fd_).IgnoreError();  // nothing to do on failure
  pagemap_fd_ = -1;
  if (fs_ != nullptr) {
    // In a forked child the parent's thread may have held the mutex at
    // fork time: only unmap the copy.
    if (!child_) fs_->~FaultState();
    env_->Munmap(fs_, PageSize()).IgnoreError();
    fs_ = nullptr;
  }
}

void UffdWpTrackerImpl::Run() {
  {
    pthread_attr_t attr;
    void* stack = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &stack, &size);
      pthread_attr_destroy(&attr);
    }
    std::lock_guard<std::mutex> lock(start_mu_);
    thread_stack_ = {reinterpret_cast<uint64_t>(stack), reinterpret_cast<uint64_t>(stack) + size};
    started_ = true;
    start_cv_.notify_all();
  }
  // Only write-protect faults are enabled: no other message comes.
  struct Handler final : sys::UffdHandler {
    UffdWpTrackerImpl* self;
    explicit Handler(UffdWpTrackerImpl* t) : self(t) {}
    void OnPagefault(uint64_t, const UffdEvent& e) override { self->HandleWriteFault(e.address); }
    // The message stays queued; the next read gets it.
    void OnReadError(uint64_t, const Status& error) override {
      self->NoteThreadError(error, "read(userfaultfd)");
    }
  } handler(this);
  while (!loop_->stopping()) {
    Status s = loop_->Run(&handler);
    if (!s.ok()) NoteThreadError(s, "poll(userfaultfd)");  // transient: try again
  }
}

void UffdWpTrackerImpl::NoteThreadError(const Status& error, const char* op) {
  std::lock_guard<std::mutex> lock(fs_->mu);
  if (fs_->error == 0) {
    fs_->error = error.err() != 0 ? error.err() : EIO;
    fs_->error_op = op;
  }
}

// The fault lock is held across "record + hook + unprotect": Collect takes
// it across "exchange bits + re-protect", so a page recorded here is either
// collected (and re-protected) before we unprotect it, or after. Were the
// lock dropped between record and unprotect, a collect could take the bit
// and re-protect the page, and our unprotect would then leave it writable
// and unrecorded: every later write to it would be lost.
void UffdWpTrackerImpl::HandleWriteFault(uint64_t addr) {
  const uint64_t page = addr & ~(PageSize() - 1);
  std::lock_guard<std::mutex> lock(fs_->mu);
  Range* r = FindLocked(page);
  if (r != nullptr) {
    r->bits.Set((page - r->start) / PageSize());
    if (hook_) hook_(page);
  }
  // Unprotect also wakes the writer. A fault left over from a range that was
  // untracked meanwhile (ENOENT: no longer registered) needs only the wake.
  Status s = uffd_.WriteProtect(page, PageSize(), /*wp=*/false);
  if (!s.ok()) {
    uffd_.Wake(page, PageSize()).IgnoreError();  // the writer retries and faults again
    if (r != nullptr && s.err() != ENOENT && fs_->error == 0) {
      fs_->error = s.err() != 0 ? s.err() : EIO;
      fs_->error_addr = page;
      fs_->error_op = "UFFDIO_WRITEPROTECT (unprotect)";
    }
  }
  fs_->faults++;
}

Result<std::unique_ptr<UffdWpTracker>> NewUffdWpTracker(Env* env, const KernelFeatures& features,
                                                        const UffdWpOptions& options) {
  using namespace uffd_feature;
  PW_RETURN_IF_ERROR(RequireUffd(features, kPagefaultFlagWp, "tracking backend uffd-wp"));
  const bool unpopulated = options.use_wp_unpopulated && features.HasUffd(kWpUnpopulated);
  sys::Userfaultfd::Options o;
  o.required_features = kPagefaultFlagWp | (unpopulated ? kWpUnpopulated : 0);
  o.optional_features = kWpHugetlbfsShmem;
  o.env = env;
  PW_ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(o));

  std::optional<sys::PagemapScanner> scanner;
  int pagemap_fd = -1;
  if (options.use_pagemap_scan && features.pagemap_scan) {
    PW_ASSIGN_OR_RETURN(sys::PagemapScanner sc, sys::PagemapScanner::Open(env, 0));
    scanner.emplace(std::move(sc));
  } else {
    PW_ASSIGN_OR_RETURN(pagemap_fd, env->OpenPagemap(0));
  }
  sys::UffdLoop::Options lo;
  lo.batch = 32;
  lo.capacity = 1;
  Result<std::unique_ptr<sys::UffdLoop>> loop = sys::UffdLoop::Create(env, lo);
  Status added = loop.ok() ? (*loop)->AddUffd(uffd.fd(), 0) : loop.status();
  if (!added.ok()) {
    if (pagemap_fd >= 0) env->Close(pagemap_fd).IgnoreError();  // undo
    return added.WithContext("uffd-wp tracker event loop");
  }
  Result<void*> mem =
      env->Mmap(nullptr, PageSize(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!mem.ok()) {
    if (pagemap_fd >= 0) env->Close(pagemap_fd).IgnoreError();  // undo
    return mem.status().WithContext("uffd-wp tracker fault state");
  }
  FaultState* fs = new (*mem) FaultState();
  auto t = std::make_unique<UffdWpTrackerImpl>(env, std::move(uffd), std::move(loop).value(), fs,
                                               std::move(scanner), pagemap_fd, unpopulated);
  t->Start();
  return std::unique_ptr<UffdWpTracker>(std::move(t));
}

Result<std::unique_ptr<Tracker>> CreateUffdWp(Env* env, const KernelFeatures& features) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<UffdWpTracker> t,
                      NewUffdWpTracker(env, features, UffdWpOptions{}));
  return std::unique_ptr<Tracker>(std::move(t));
}

}  // namespace pagewise::track_internal
