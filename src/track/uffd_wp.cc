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
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sys/pagemap.h"
#include "sys/uapi.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"
#include "track/memory_events.h"
#include "track/track_internal.h"
#include "track/uffd_wp_tracker.h"

namespace pagewise::track_internal {
namespace {

constexpr uint64_t kPmUffdWp = 1ULL << 57;  // /proc/pid/pagemap: pte is uffd write-protected

// State the tracker thread writes while serving a fault. It lives in its own
// mapping, not the heap, so that tracking heap memory cannot make the
// tracker thread fault on itself.
struct FaultState {
  std::mutex mu;        // "the fault lock"
  uint64_t faults = 0;  // guarded by mu
  int error = 0;        // first errno of a failed unprotect/read, guarded by mu
  uint64_t error_addr = 0;
  const char* error_op = nullptr;
};

class UffdWpTrackerImpl final : public UffdWpTracker, public MemoryEventListener {
 public:
  struct Range {
    uint64_t start = 0, end = 0;
    PageBitmap bits;     // written since the last collect (fault lock)
    PageBitmap scratch;  // Collect's working set (api_mu_)
    PageBitmap extra;    // Collect: faulted pages its sweep did not see (api_mu_)
  };

  UffdWpTrackerImpl(Env* env, sys::Userfaultfd uffd, std::unique_ptr<sys::UffdLoop> loop,
                    FaultState* fs, std::optional<sys::PagemapScanner> scanner, int pagemap_fd,
                    bool unpopulated)
      : env_(env),
        uffd_(std::move(uffd)),
        loop_(std::move(loop)),
        fs_(fs),
        scanner_(std::move(scanner)),
        pagemap_fd_(pagemap_fd),
        wp_unpopulated_(unpopulated),
        pid_(getpid()) {}

  // Starts the tracker thread; waits until it published its stack range.
  void Start() {
    thread_ = std::make_unique<std::thread>([this] { Run(); });
    std::unique_lock<std::mutex> lock(start_mu_);
    start_cv_.wait(lock, [this] { return started_; });
    RegisterMemoryEventListener(this);
  }

  ~UffdWpTrackerImpl() override {
    UnregisterMemoryEventListener(this);
    if (getpid() != pid_) {
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

  TrackBackend backend() const override { return TrackBackend::kUffdWp; }

  // Drops of shared and file-backed memory leave uffd-wp markers (the page
  // changed, no fault comes, and it still reads as protected): this backend
  // sees them only through the madvise interposer. Without it, refuse such
  // memory rather than lose those writes (uffd-wp-async sees them through
  // UFFD_EVENT_REMOVE, drop_events.h).
  static Status CheckDropsVisible(const std::vector<Vma>& vmas, uint64_t start, uint64_t end) {
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

  void SetFaultHook(std::function<void(uint64_t)> hook) override {
    std::lock_guard<std::mutex> lock(fs_->mu);
    hook_ = std::move(hook);
  }

  Status Track(void* addr, size_t len) override {
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
    Status s = uffd_.Register(start, len, UFFDIO_REGISTER_MODE_WP);
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

  Status Untrack(void* addr, size_t len) override {
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

  Status Collect(std::vector<PageRange>* written) override;

  TrackerStats stats() const override {
    std::lock_guard<std::mutex> api(api_mu_);
    TrackerStats st = stats_;
    std::lock_guard<std::mutex> lock(fs_->mu);
    st.faults_handled = fs_->faults;
    return st;
  }

  std::vector<PageRange> tracked() const override {
    std::lock_guard<std::mutex> api(api_mu_);
    return TrackedLocked();
  }

  void OnDropped(uint64_t start, uint64_t end) override {
    if (getpid() != pid_) return;
    std::lock_guard<std::mutex> lock(fs_->mu);
    const uint64_t page = PageSize();
    for (const auto& r : ranges_) {
      uint64_t s = std::max(start, r->start), e = std::min(end, r->end);
      if (s < e) r->bits.SetRange((s - r->start) / page, (e - r->start) / page);
    }
  }

 private:
  Status CheckProcess(const char* op) const {
    if (getpid() == pid_) return Status::Ok();
    return Status::FailedPrecondition(std::string(op) +
                                      ": this tracker belongs to the parent process; a forked "
                                      "child is not tracked (create a new Tracker in the child)");
  }

  std::vector<PageRange> TrackedLocked() const {
    std::vector<PageRange> out;
    for (const auto& r : ranges_) out.push_back({r->start, r->end});
    return out;
  }

  // Refuses ranges holding memory the tracker thread writes.
  Status CheckOwnMemory(uint64_t start, uint64_t end) const {
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

  // Caller holds fs_->mu and api_mu_.
  void InsertSorted(std::unique_ptr<Range> r) {
    auto it =
        std::lower_bound(ranges_.begin(), ranges_.end(), r->start,
                         [](const std::unique_ptr<Range>& a, uint64_t s) { return a->start < s; });
    ranges_.insert(it, std::move(r));
  }

  // Caller holds api_mu_. Takes the fault lock to unlink.
  std::unique_ptr<Range> RemoveRange(Range* r) {
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

  // Caller holds fs_->mu.
  Range* FindLocked(uint64_t addr) const {
    auto it =
        std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                         [](uint64_t a, const std::unique_ptr<Range>& r) { return a < r->start; });
    if (it == ranges_.begin()) return nullptr;
    Range* r = (it - 1)->get();
    return addr < r->end ? r : nullptr;
  }

  // Without WP_UNPOPULATED the kernel cannot write-protect an empty pte, so
  // map every page first by reading it (anonymous pages get the zero page).
  // The load is atomic (relaxed): program threads may be writing the page.
  static void ReadFault(uint64_t start, uint64_t end) {
    for (uint64_t a = start; a < end; a += PageSize()) {
      (void)__atomic_load_n(reinterpret_cast<const char*>(a), __ATOMIC_RELAXED);
    }
  }

  void Run();
  void HandleWriteFault(uint64_t addr);
  // Records the first failure of the tracker thread (Collect reports it).
  void NoteThreadError(const Status& error, const char* op);
  Status Sweep(Range* r, const std::vector<Vma>* maps);
  void CloseFds() {
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

  Env* const env_;
  sys::Userfaultfd uffd_;
  // The tracker thread's loop. Its storage is its own mapping, never
  // tracked (CheckOwnMemory): serving a fault never writes tracked memory.
  std::unique_ptr<sys::UffdLoop> loop_;
  FaultState* fs_;
  std::optional<sys::PagemapScanner> scanner_;  // null: sweep by reading pagemap_fd_
  int pagemap_fd_;
  const bool wp_unpopulated_;
  const pid_t pid_;
  bool child_ = false;

  std::unique_ptr<std::thread> thread_;
  std::mutex start_mu_;
  std::condition_variable start_cv_;
  bool started_ = false;
  PageRange thread_stack_;  // set before Start() returns, then constant

  mutable std::mutex api_mu_;                   // serialises Track/Untrack/Collect
  std::vector<std::unique_ptr<Range>> ranges_;  // sorted; changed under api_mu_ + fs_->mu
  std::function<void(uint64_t)> hook_;          // fs_->mu
  TrackerStats stats_;                          // api_mu_
};

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

// Marks in r->scratch every page of r that is writable without having
// faulted: empty ptes (MADV_DONTNEED dropped them and their protection),
// whole page-table holes, and pages written since such a drop.
Status UffdWpTrackerImpl::Sweep(Range* r, const std::vector<Vma>* maps) {
  const uint64_t page = PageSize();
  if (scanner_) {
    PagemapScanArgs args;
    args.start = r->start;
    args.end = r->end;
    // The fast path (mask == return == WRITTEN) counts empty ptes and holes
    // as written; no WP_MATCHING: sync VMAs cannot be re-armed by the scan.
    args.category_mask = sys::page_is::kWritten;
    args.return_mask = sys::page_is::kWritten;
    std::vector<PageRegion> regions;
    Status s = scanner_->ScanAll(args, &regions);
    for (const PageRegion& reg : regions) {
      r->scratch.SetRange((reg.start - r->start) / page, (reg.end - r->start) / page);
    }
    return s;
  }
  // /proc/self/pagemap: an entry without PM_UFFD_WP is an unprotected pte,
  // an empty pte or a hole. Only mapped parts are read: an unmapped address
  // also reads as 0, and must not be reported.
  std::vector<PageRange> parts = {{r->start, r->end}};
  ClipToMapped(*maps, &parts);
  std::vector<uint64_t> entries(4096);
  for (const PageRange& part : parts) {
    for (uint64_t a = part.start; a < part.end;) {
      const size_t n = std::min<size_t>(entries.size(), (part.end - a) / page);
      PW_RETURN_IF_ERROR(
          ReadFully(env_, pagemap_fd_, entries.data(), n * 8, static_cast<off_t>(a / page * 8)));
      for (size_t i = 0; i < n; ++i) {
        if ((entries[i] & kPmUffdWp) == 0) r->scratch.Set((a - r->start) / page + i);
      }
      a += n * page;
    }
  }
  return Status::Ok();
}

Status UffdWpTrackerImpl::Collect(std::vector<PageRange>* written) {
  PW_RETURN_IF_ERROR(CheckProcess("Collect"));
  std::lock_guard<std::mutex> api(api_mu_);
  const uint64_t page = PageSize();
  Status first_error;
  auto note = [&first_error](const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  };
  // 1. Sweep without the fault lock (see Sweep). A page that loses its
  // protection after its sweep is found by the next collect's sweep.
  std::vector<Vma> maps;
  if (!scanner_) {
    Result<std::vector<Vma>> m = ReadMaps(env_);
    if (!m.ok()) return m.status().WithContext("Collect");  // nothing taken yet
    maps = std::move(m).value();
  }
  for (const auto& r : ranges_) {
    r->scratch.ClearAll();
    note(Sweep(r.get(), &maps).WithContext("Collect " + RangeString(r->start, r->end) + ": sweep"));
    if (!wp_unpopulated_) {
      ForEachRun(r->scratch,
                 [&](size_t a, size_t b) { ReadFault(r->start + a * page, r->start + b * page); });
    }
  }
  // 2. Under the fault lock: take the faulted pages and re-protect every
  // page we are about to report. Nothing here allocates or writes tracked
  // memory (the bitmaps are the tracker's own mappings).
  bool any_extra = false;
  {
    std::lock_guard<std::mutex> lock(fs_->mu);
    if (fs_->error != 0) {
      char where[48];
      snprintf(where, sizeof(where), " at 0x%" PRIx64, fs_->error_addr);
      note(ErrnoStatus(fs_->error, std::string("tracker thread: ") + fs_->error_op + where));
      fs_->error = 0;
    }
    for (const auto& r : ranges_) {
      for (size_t w = 0; w < r->bits.words(); ++w) {
        const uint64_t taken = r->bits.word(w).exchange(0, std::memory_order_acq_rel);
        const uint64_t swept = r->scratch.word(w).load(std::memory_order_relaxed);
        r->extra.word(w).store(taken & ~swept, std::memory_order_relaxed);
        any_extra |= (taken & ~swept) != 0;
        r->scratch.word(w).store(swept | taken, std::memory_order_relaxed);
      }
      Range* rr = r.get();
      ForEachRun(r->scratch, [&](size_t a, size_t b) {
        Status s = uffd_.WriteProtect(rr->start + a * page, (b - a) * page, /*wp=*/true);
        if (s.ok()) return;
        if (s.err() == ENOENT) return;  // unmapped meanwhile: nothing left to protect
        // Not re-armed: keep the pages written so the next collect reports
        // them again and retries; they are still reported now.
        rr->bits.SetRange(a, b);
        note(s.WithContext("Collect: re-protecting"));
      });
    }
  }
  // 2b. Faulted pages the sweep did not see were either written after the
  // sweep or unmapped since their fault. Report only those still mapped; if
  // the maps cannot be read, keep them pending for the next collect.
  if (any_extra) {
    Result<std::vector<Vma>> m = ReadMaps(env_);
    if (!m.ok()) note(m.status().WithContext("Collect"));
    for (const auto& r : ranges_) {
      ForEachRun(r->extra, [&](size_t a, size_t b) {
        for (size_t p = a; p < b; ++p) {
          if (!m.ok()) {
            r->bits.Set(p);
            r->scratch.word(p / 64).fetch_and(~(uint64_t{1} << (p % 64)),
                                              std::memory_order_relaxed);
          } else if (!IsMapped(*m, r->start + p * page)) {
            r->scratch.word(p / 64).fetch_and(~(uint64_t{1} << (p % 64)),
                                              std::memory_order_relaxed);
          }
        }
      });
    }
  }
  // 3. Report.
  const size_t from = written->size();
  for (const auto& r : ranges_) {
    ForEachRun(r->scratch, [&](size_t a, size_t b) {
      AppendRange(written, r->start + a * page, r->start + b * page);
    });
  }
  SortAndCoalesce(written, from);
  stats_.collects++;
  for (size_t i = from; i < written->size(); ++i)
    stats_.pages_reported += (*written)[i].pages(page);
  return first_error;
}

}  // namespace

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
