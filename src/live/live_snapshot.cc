// LiveSnapshot implementation: Start (validate, create the image, protect =
// T), the background saver thread, and Finish (lift protection, commit or
// discard). The fault paths are in live_faults.cc.
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/clock.h"
#include "image/image_env.h"
#include "image/writer.h"
#include "live/copy_user.h"
#include "live/live_env.h"
#include "live/live_snapshot_impl.h"

namespace pagewise {
namespace live {

void ForEachRun(const uint64_t* bits, uint64_t n,
                const std::function<void(uint64_t, uint64_t)>& fn) {
  uint64_t i = 0;
  while (i < n) {
    if (((bits[i / 64] >> (i % 64)) & 1) == 0) {
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < n && ((bits[j / 64] >> (j % 64)) & 1) != 0) ++j;
    fn(i, j - i);
    i = j;
  }
}

namespace {

Status ValidateRegions(const std::vector<Region>& regions, size_t page_size) {
  if (regions.empty()) return Status::InvalidArgument("live snapshot: no regions given");
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    const std::string where = "live snapshot: region " + std::to_string(i) + " '" + r.name + "'";
    if (r.page_size != page_size) {
      return Status::NotSupported(where + " has page_size " + std::to_string(r.page_size) +
                                  "; only the system page size (" + std::to_string(page_size) +
                                  ") is supported (hugetlbfs is not)");
    }
    if (r.address == 0 || r.length == 0 || r.address % page_size != 0 ||
        r.length % page_size != 0) {
      return Status::InvalidArgument(where +
                                     ": address and length must be non-zero multiples "
                                     "of the page size");
    }
    if (r.kind != RegionKind::kAnonymous && r.kind != RegionKind::kShared) {
      return Status::NotSupported(where +
                                  ": only anonymous private and memfd/shmem shared "
                                  "memory can be snapshotted live (userfaultfd write-protect)");
    }
  }
  return Status::Ok();
}

}  // namespace

LiveSnapshotImpl::LiveSnapshotImpl(const LiveSnapshotOptions& options, Env* env, Env* image_env)
    : opts_(options), env_(env), image_env_(image_env) {
  page_size_ = PageSize();
}

LiveSnapshotImpl::~LiveSnapshotImpl() {
  Cancel();
  Status ignored = Wait();  // joins the saver; the status was the caller's to read
  ignored.IgnoreError();
  // Begin() failed after starting the fault thread: LiftAll() joined it.
}

Status LiveSnapshotImpl::Begin(const std::string& path, const std::vector<Region>& regions) {
  start_ns_ = NowNs();
  path_ = path;
  PW_RETURN_IF_ERROR(ValidateRegions(regions, page_size_));
  if (!opts_.image.parent.empty()) {
    return Status::InvalidArgument(
        "live snapshot: image.parent must be empty (a live snapshot "
        "is a full image; layer later images on top of it)");
  }

  std::vector<LiveRegion> sorted;
  for (size_t i = 0; i < regions.size(); ++i) {
    LiveRegion lr;
    lr.index = static_cast<uint32_t>(i);
    lr.start = regions[i].address;
    lr.length = regions[i].length;
    lr.pages = regions[i].length / page_size_;
    lr.name = regions[i].name;
    sorted.push_back(lr);
    any_shared_ = any_shared_ || regions[i].kind == RegionKind::kShared;
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const LiveRegion& a, const LiveRegion& b) { return a.start < b.start; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i - 1].start + sorted[i - 1].length > sorted[i].start) {
      return Status::InvalidArgument("live snapshot: regions '" + sorted[i - 1].name + "' and '" +
                                     sorted[i].name + "' overlap");
    }
  }
  AssignWords(&sorted);

  PW_ASSIGN_OR_RETURN(writer_, CreateImageWriter(path, opts_.image, image_env_));
  for (const Region& r : regions) {
    Result<uint32_t> idx = writer_->AddRegion(r);
    if (!idx.ok())
      return idx.status().WithContext("live snapshot: declaring region '" + r.name + "'");
  }

  writer_impl_ = dynamic_cast<image::ImageWriterImpl*>(writer_.get());
  if (writer_impl_ == nullptr) return Status::Internal("live snapshot: unexpected image writer");
  chunk_pages_ = std::max<size_t>(64, (opts_.chunk_pages + 63) / 64 * 64);
  uint64_t total_pages = 0;
  for (const LiveRegion& r : sorted) total_pages += r.pages;
  const size_t queue_pages = static_cast<size_t>(std::max<uint64_t>(
      1, std::min<uint64_t>(opts_.fault_queue_pages, std::max<uint64_t>(64, total_pages / 16))));
  core_ = std::make_shared<LiveCore>(std::move(sorted), page_size_, queue_pages);
  next_progress_ = std::max<uint64_t>(1, opts_.progress_every_pages);
  queued_.reserve(core_->queue().capacity());

  Status s = opts_.tracker != nullptr ? BeginTracker() : BeginBase();
  if (!s.ok()) return s;
  protect_ns_.store(NowNs() - start_ns_, std::memory_order_relaxed);
  saver_thread_ = std::thread([this] { SaverMain(); });
  return Status::Ok();
}

void LiveSnapshotImpl::Cancel() {
  if (core_ != nullptr && !finished_.load(std::memory_order_acquire)) {
    core_->Fail(Status::FailedPrecondition("cancelled by the caller"));
  }
}

Status LiveSnapshotImpl::Wait() {
  std::lock_guard<std::mutex> lock(wait_mu_);
  if (saver_thread_.joinable()) saver_thread_.join();
  return final_;
}

LiveProgress LiveSnapshotImpl::progress() const {
  LiveProgress p;
  if (core_ == nullptr) return p;
  p.pages_saved = core_->written();
  p.pages_total = core_->total_pages();
  p.done = finished_.load(std::memory_order_acquire);
  return p;
}

LiveSnapshotStats LiveSnapshotImpl::stats() const {
  LiveSnapshotStats s;
  if (core_ == nullptr) return s;
  core_->FillStats(&s);
  s.protect_ns = protect_ns_.load(std::memory_order_relaxed);
  s.total_ns = total_ns_.load(std::memory_order_relaxed);
  s.peak_extra_bytes = core_->queue().peak_bytes() + core_->claims().bytes();
  return s;
}

void LiveSnapshotImpl::ReportProgress(bool done) {
  if (!opts_.progress) return;
  LiveProgress p;
  p.pages_saved = core_->written();
  p.pages_total = core_->total_pages();
  p.done = done;
  if (!done && p.pages_saved < next_progress_) return;
  while (next_progress_ <= p.pages_saved)
    next_progress_ += std::max<uint64_t>(1, opts_.progress_every_pages);
  opts_.progress(p);
}

// ---- the saver --------------------------------------------------------------

void LiveSnapshotImpl::SaverMain() {
  if (opts_.saver_nice != 0) {
    // Best effort: a refused nice value changes timing, not correctness.
    env_->AdjustThreadNice(opts_.saver_nice).IgnoreError();
  }
  Status s = SaveAll();
  Finish(std::move(s));
}

Status LiveSnapshotImpl::SaveAll() {
  for (const LiveRegion& r : core_->regions()) {
    for (uint64_t p = 0; p < r.pages; p += chunk_pages_) {
      if (core_->aborted()) return core_->error();
      // Spilled pages first: draining them frees writers waiting for room.
      PW_RETURN_IF_ERROR(DrainSpill(false));
      PW_RETURN_IF_ERROR(SaveChunk(r, p, std::min<uint64_t>(chunk_pages_, r.pages - p)));
      ReportProgress(false);
    }
  }
  // Every page is claimed now; pages the fault path claimed are handed on
  // as they arrive in the spill area.
  while (core_->written() < core_->total_pages()) {
    if (core_->aborted()) return core_->error();
    PW_RETURN_IF_ERROR(DrainSpill(true));
    ReportProgress(false);
  }
  return Status::Ok();
}

Status LiveSnapshotImpl::SaveChunk(const LiveRegion& r, uint64_t first, uint64_t n) {
  PageClaims& claims = core_->claims();
  const size_t w0 = r.first_word + static_cast<size_t>(first / 64);
  const size_t words = static_cast<size_t>((n + 63) / 64);
  const uint64_t base = r.start + first * page_size_;
  // One bitmap word (64 pages) at a time: take a staging buffer of the
  // image writer (this may wait for the writer's pipeline, so before any
  // claim), claim, copy into it, mark saved, lift the protection, hand the
  // buffer over. A writer that hits a page the saver has claimed waits
  // until its word is copied, so the claimed-but-protected window stays one
  // 256 KiB copy long.
  for (size_t i = 0; i < words; ++i) {
    uint64_t mask = ~0ULL;
    if (i == words - 1 && n % 64 != 0) mask = (1ULL << (n % 64)) - 1;
    if ((claims.ClaimedWord(w0 + i) & mask) == mask) continue;  // the fault path had them all
    uint8_t* staging = writer_impl_->AcquireStaging();
    const uint64_t got = claims.ClaimWord(w0 + i, mask);
    if (got == 0) {
      writer_impl_->ReleaseStaging(staging);
      continue;
    }
    const uint64_t wbase = base + i * 64 * page_size_;
    const uint64_t wpage = first + i * 64;  // region page of bit 0
    std::vector<uint64_t> pages;
    pages.reserve(static_cast<size_t>(__builtin_popcountll(got)));
    // The claimed pages are write-protected (base mode: by us; tracker
    // mode: by the tracker's Collect at T), so this copy is their content
    // at T.
    ForEachRun(&got, 64, [&](uint64_t s, uint64_t len) {
      CopyUserMemory(staging + pages.size() * page_size_,
                     reinterpret_cast<const void*>(wbase + s * page_size_), len * page_size_);
      for (uint64_t k = 0; k < len; ++k) pages.push_back(wpage + s + k);
    });
    claims.MarkSavedWord(w0 + i, got);
    Status st;
    if (opts_.tracker == nullptr) {
      // Base mode: lift protection of what we copied, so writers stop
      // faulting there (and writers waiting on those pages wake up).
      ForEachRun(&got, 64, [&](uint64_t s, uint64_t len) {
        if (st.ok()) st = Unprotect(wbase + s * page_size_, len * page_size_);
      });
    }
    const size_t k = pages.size();
    Status ws = writer_impl_->SubmitStaged(r.index, std::move(pages), staging);
    if (!ws.ok()) {
      return ws.WithContext("writing pages of region '" + r.name + "' at offset " +
                            std::to_string(wpage * page_size_));
    }
    PW_RETURN_IF_ERROR(st);
    core_->AddBackground(k);
    core_->AddWritten(k);
  }
  return Status::Ok();
}

Status LiveSnapshotImpl::DrainSpill(bool wait) {
  queued_.clear();
  core_->queue().Take(&queued_, wait);
  if (queued_.empty()) return Status::Ok();
  // Large batches per region, in offset order: one staging buffer per
  // StagingPages() pages, each spilled page copied once into it and its
  // spill buffer freed at once (waiting fault paths resume).
  std::sort(queued_.begin(), queued_.end(), [](const QueuedPage& a, const QueuedPage& b) {
    return a.region != b.region ? a.region < b.region : a.offset < b.offset;
  });
  Status st;
  for (size_t i = 0; i < queued_.size();) {
    const uint32_t region = queued_[i].region;
    if (!st.ok()) {
      core_->queue().Release(queued_[i++].data);
      continue;
    }
    const size_t cap = writer_impl_->StagingPages(region);
    uint8_t* staging = writer_impl_->AcquireStaging();
    std::vector<uint64_t> pages;
    pages.reserve(cap);
    for (; i < queued_.size() && queued_[i].region == region && pages.size() < cap; ++i) {
      std::memcpy(staging + pages.size() * page_size_, queued_[i].data, page_size_);
      pages.push_back(queued_[i].offset / page_size_);
      core_->queue().Release(queued_[i].data);
    }
    const size_t k = pages.size();
    st = writer_impl_->SubmitStaged(region, std::move(pages), staging);
    if (!st.ok()) {
      st = st.WithContext("writing pages saved on write faults (region " + std::to_string(region) +
                          ")");
    } else {
      core_->AddWritten(k);
    }
  }
  return st;
}

// ---- the end ----------------------------------------------------------------

void LiveSnapshotImpl::Finish(Status s) {
  if (!s.ok()) core_->Fail(s);
  // The first error wins (it may have come from the fault path).
  if (core_->aborted()) s = core_->error();
  std::string problems;
  if (opts_.tracker != nullptr) {
    EndTracker();
  } else {
    LiftAll(/*failed=*/!s.ok(), &problems);
  }
  if (s.ok()) {
    s = writer_->Commit();
    if (!s.ok()) s = s.WithContext("committing the image");
  }
  writer_.reset();  // an uncommitted image's temporary file is removed
  if (!s.ok()) {
    std::string msg = "live snapshot to " + path_ + " failed: " + s.message() +
                      "; every page's write protection was lifted and writers released, "
                      "no image was written";
    if (!problems.empty()) msg += " (while lifting protection: " + problems + ")";
    if (s.code() == Code::kNoSpace) msg += "; free space there or write the image elsewhere";
    s = Status(s.code(), s.err(), msg);
  }
  total_ns_.store(NowNs() - start_ns_, std::memory_order_relaxed);
  final_ = s;
  finished_.store(true, std::memory_order_release);
  ReportProgress(true);
}

}  // namespace live

Result<std::unique_ptr<LiveSnapshot>> LiveSnapshot::Start(const std::string& path,
                                                          const std::vector<Region>& regions,
                                                          const LiveSnapshotOptions& options) {
  return StartLiveSnapshot(path, regions, options, Env::Default(), Env::Default());
}

Result<std::unique_ptr<LiveSnapshot>> StartLiveSnapshot(const std::string& path,
                                                        const std::vector<Region>& regions,
                                                        const LiveSnapshotOptions& options,
                                                        Env* env, Env* image_env) {
  auto snap = std::make_unique<live::LiveSnapshotImpl>(options, env, image_env);
  Status s = snap->Begin(path, regions);
  if (!s.ok()) return s;
  return std::unique_ptr<LiveSnapshot>(std::move(snap));
}

Result<LiveSnapshotStats> TakeLiveSnapshot(const std::string& path,
                                           const std::vector<Region>& regions,
                                           const LiveSnapshotOptions& options) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<LiveSnapshot> snap,
                      LiveSnapshot::Start(path, regions, options));
  PW_RETURN_IF_ERROR(snap->Wait());
  return snap->stats();
}

}  // namespace pagewise
