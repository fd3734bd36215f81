// Base mode of the live snapshot: our own userfaultfd in write-protect mode,
// the fault-handler thread, and lifting all protection at the end.
#include <memory>
#include <string>

#include "base/bytes.h"
#include "live/live_snapshot_impl.h"
#include "pagewise/probe.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"

namespace pagewise::live {

namespace {
constexpr int kMaxEagainRetries = 1000;
constexpr size_t kEventBatch = 32;

std::string HexAddr(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

Status LiveSnapshotImpl::BeginBase() {
  using namespace uffd_feature;
  // WP_UNPOPULATED: without it, write-protecting anonymous memory skips
  // never-touched pages, and a first write there after T would go unseen.
  // WP_HUGETLBFS_SHMEM: write-protect for memfd/shmem mappings.
  sys::Userfaultfd::Options uo;
  uo.required_features = kPagefaultFlagWp | kWpUnpopulated | (any_shared_ ? kWpHugetlbfsShmem : 0);
  uo.env = env_;
  Result<sys::Userfaultfd> uffd = sys::Userfaultfd::Open(uo);
  if (!uffd.ok()) return uffd.status().WithContext("live snapshot: creating a userfaultfd");
  uffd_ = std::move(uffd).value();

  Status s;
  for (const LiveRegion& r : core_->regions()) {
    uint64_t ioctls = 0;
    s = uffd_.Register(r.start, r.length, sys::kRegisterWp, &ioctls);
    if (!s.ok()) {
      s = s.WithContext("live snapshot: registering region '" + r.name + "' [" + HexAddr(r.start) +
                        ", +" + std::to_string(r.length) +
                        ") for write-protect (is it mapped, and anonymous or shmem?)");
      break;
    }
    registered_.push_back(&r);
    if ((ioctls & sys::kRangeIoctlWriteProtect) == 0) {
      s = Status::NotSupported(
          "live snapshot: the kernel does not allow UFFDIO_WRITEPROTECT on "
          "region '" +
          r.name + "'");
      break;
    }
  }
  if (s.ok()) {
    // drain_on_stop: at the end, faults already queued are still served, so
    // no writer stays blocked on a message nobody reads.
    sys::UffdLoop::Options lo;
    lo.batch = kEventBatch;
    lo.capacity = 1;
    lo.drain_on_stop = true;
    Result<std::unique_ptr<sys::UffdLoop>> loop = sys::UffdLoop::Create(env_, lo);
    if (loop.ok()) {
      loop_ = std::move(loop).value();
      s = loop_->AddUffd(uffd_.fd(), 0);
    } else {
      s = loop.status();
    }
    if (!s.ok()) {
      s = s.WithContext("live snapshot: creating the fault thread's event loop");
    } else {
      fault_thread_ = std::thread([this] { FaultMain(); });
      // Wait until the thread runs and has its malloc arena: creating one
      // maps memory, which would wait behind the write-protect ioctl below
      // (it holds the mmap lock while it walks the regions) while writers
      // wait on the thread.
      std::unique_lock<std::mutex> lock(ready_mu_);
      ready_cv_.wait(lock, [this] { return fault_thread_ready_; });
    }
  }
  // T: every page of every region write-protected. Writers that hit a page
  // from here on wait for the fault thread, which saves the page first.
  if (s.ok()) {
    for (const LiveRegion& r : core_->regions()) {
      s = uffd_.WriteProtect(r.start, r.length, /*wp=*/true);
      if (!s.ok()) {
        s = s.WithContext("live snapshot: write-protecting region '" + r.name + "'");
        break;
      }
    }
  }
  if (!s.ok()) {
    core_->Fail(s);
    LiftAll(/*failed=*/true, nullptr);
  }
  return s;
}

void LiveSnapshotImpl::FaultMain() {
  {
    // Creates this thread's malloc arena now, before T (see BeginBase).
    std::unique_ptr<char[]> warm(new char[64]);
    warm[0] = 0;
    std::lock_guard<std::mutex> lock(ready_mu_);
    fault_thread_ready_ = true;
  }
  ready_cv_.notify_all();
  // Only write-protect faults are enabled on this userfaultfd.
  struct Handler final : sys::UffdHandler {
    LiveSnapshotImpl* self;
    explicit Handler(LiveSnapshotImpl* s) : self(s) {}
    void OnPagefault(uint64_t, const UffdEvent& e) override { self->ServeFault(e.address); }
    void OnReadError(uint64_t, const Status& error) override {
      self->core_->Fail(error.WithContext("reading write-protect faults"));
      self->loop_->Stop();
    }
  } handler(this);
  Status s = loop_->Run(&handler);
  if (!s.ok()) core_->Fail(s.WithContext("waiting for write-protect faults"));
}

void LiveSnapshotImpl::ServeFault(uint64_t addr) {
  const uint64_t t0 = NowNs();
  const uint64_t page = addr & ~(static_cast<uint64_t>(page_size_) - 1);
  core_->CountFault();
  uint64_t first = 0, saved = 0;
  const FaultOutcome o =
      core_->SaveForFault(page, /*wait_for_saver=*/false, opts_.fault_around_pages, &first, &saved);
  if (o == FaultOutcome::kNotOurs) {
    // Only registered ranges fault here, and those are all ours; wake the
    // address defensively rather than leave a thread blocked.
    uffd_.Wake(page, page_size_).IgnoreError();
    return;
  }
  if (o == FaultOutcome::kAborted) {
    // The snapshot is failing: release the writer now; the final LiftAll
    // unprotects everything anyway, so an error here changes nothing.
    Unprotect(page, page_size_).IgnoreError();
    return;
  }
  // Lift the protection of what this fault saved (the faulting page and its
  // fault-around group), and of the faulting page if it was saved earlier.
  // kSaverCopying: the saver lifts it (and wakes this writer) once copied.
  Status s;
  ForEachRun(&saved, 64, [&](uint64_t i, uint64_t n) {
    if (s.ok()) s = Unprotect(first + i * page_size_, n * page_size_);
  });
  if (s.ok() && o == FaultOutcome::kAlreadySaved) s = Unprotect(page, page_size_);
  if (!s.ok()) {
    core_->Fail(s.WithContext("lifting write protection after saving a page"));
    return;
  }
  if (o != FaultOutcome::kSaverCopying) core_->RecordService(NowNs() - t0);
}

Status LiveSnapshotImpl::Unprotect(uint64_t start, uint64_t len) const {
  Status s;
  for (int attempt = 0; attempt < kMaxEagainRetries; ++attempt) {
    s = uffd_.WriteProtect(start, len, /*wp=*/false);
    // EAGAIN: the mm is changing under a non-cooperative userfaultfd event
    // (some other monitor's); nothing was done, so retry the whole range.
    if (s.code() != Code::kRetry) break;
  }
  if (!s.ok()) {
    return s.WithContext("clearing write protection of [" + HexAddr(start) + ", +" +
                         std::to_string(len) + ")");
  }
  return s;
}

void LiveSnapshotImpl::LiftAll(bool failed, std::string* problems) {
  auto note = [&](const Status& s) {
    if (problems != nullptr && !s.ok()) {
      if (!problems->empty()) *problems += "; ";
      *problems += s.ToString();
    }
  };
  if (fault_thread_.joinable()) {
    loop_->Stop();  // the thread serves the faults already queued, then returns
    fault_thread_.join();
  }
  loop_.reset();
  if (uffd_.valid()) {
    for (const LiveRegion* r : registered_) {
      // After a failure some pages are still protected and writers may be
      // blocked on them: clear protection of the whole region (this wakes
      // them). On success every page was unprotected as it was saved.
      if (failed) note(Unprotect(r->start, r->length));
      Status s = uffd_.Unregister(r->start, r->length);
      if (!s.ok()) note(s.WithContext("unregistering region '" + r->name + "'"));
    }
    registered_.clear();
    // Closing the userfaultfd is the final release: the kernel drops every
    // registration of this fd and wakes every thread blocked on it.
    uffd_ = sys::Userfaultfd();
  }
}

}  // namespace pagewise::live
