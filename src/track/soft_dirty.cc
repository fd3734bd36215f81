// Backend soft-dirty: the kernel sets bit 55 of a page's /proc/self/pagemap
// entry when the page is written, and writing "4" to /proc/self/clear_refs
// clears the bit for every page of the process.
//
// NOT atomic: Collect reads the bits, then clears them; a write that lands
// between the read of its page and the clear is lost. The clear is also
// process-wide: clearing for one range clears every range, so Track() of a
// new range first folds the existing ranges' bits into a pending set. Never
// chosen automatically; offered only where the probe saw bit 55 set after a
// write (kernels built with CONFIG_MEM_SOFT_DIRTY).
#include <fcntl.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "pagewise/probe.h"
#include "sys/process.h"
#include "track/memory_events.h"
#include "track/track_internal.h"

namespace pagewise::track_internal {
namespace {

constexpr uint64_t kPmSoftDirty = 1ULL << 55;

class SoftDirtyTracker final : public Tracker, public MemoryEventListener {
 public:
  SoftDirtyTracker(Env* env, int pagemap_fd, int clear_refs_fd)
      : env_(env), pagemap_fd_(pagemap_fd), clear_refs_fd_(clear_refs_fd), pid_(sys::SelfPid()) {
    RegisterMemoryEventListener(this);
  }
  ~SoftDirtyTracker() override {
    UnregisterMemoryEventListener(this);
    env_->Close(pagemap_fd_).IgnoreError();  // read-only procfs files
    env_->Close(clear_refs_fd_).IgnoreError();
  }

  TrackBackend backend() const override { return TrackBackend::kSoftDirty; }

  Status Track(void* addr, size_t len) override {
    PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Track"));
    if (sys::SelfPid() != pid_)
      return Status::FailedPrecondition("Track: tracker of the parent process");
    const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
    std::lock_guard<std::mutex> lock(mu_);
    PW_RETURN_IF_ERROR(CheckNoOverlap(ranges_, start, end));
    PW_RETURN_IF_ERROR(CoveringVmas(env_, start, end, "Track").status());
    // clear_refs is process-wide: keep what the tracked ranges have so far.
    std::vector<PageRange> before;
    for (const PageRange& r : ranges_) PW_RETURN_IF_ERROR(ReadDirty(r, &before));
    PW_RETURN_IF_ERROR(ClearRefs().WithContext("Track " + RangeString(start, end)));
    pending_.insert(pending_.end(), before.begin(), before.end());
    SortAndCoalesce(&pending_);
    auto it = std::lower_bound(ranges_.begin(), ranges_.end(), start,
                               [](const PageRange& r, uint64_t s) { return r.start < s; });
    ranges_.insert(it, {start, end});
    return Status::Ok();
  }

  Status Untrack(void* addr, size_t len) override {
    PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Untrack"));
    const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = ranges_.begin(); it != ranges_.end(); ++it) {
      if (it->start != start || it->end != end) continue;
      ranges_.erase(it);
      std::vector<PageRange> keep;
      for (const PageRange& p : pending_) {
        if (p.end <= start || p.start >= end) keep.push_back(p);
      }
      pending_.swap(keep);
      return Status::Ok();
    }
    return NotTracked(start, end, ranges_);
  }

  Status Collect(std::vector<PageRange>* written) override {
    if (sys::SelfPid() != pid_)
      return Status::FailedPrecondition("Collect: tracker of the parent process");
    std::lock_guard<std::mutex> lock(mu_);
    const size_t from = written->size();
    std::vector<PageRange> found;
    for (const PageRange& r : ranges_) {
      Status s = ReadDirty(r, &found);
      if (!s.ok()) return s.WithContext("Collect");  // nothing cleared: the bits stay for next time
    }
    // The window between the reads above and this clear is where a write
    // can be lost: soft-dirty has no atomic read-and-clear.
    PW_RETURN_IF_ERROR(ClearRefs().WithContext("Collect"));
    written->insert(written->end(), found.begin(), found.end());
    written->insert(written->end(), pending_.begin(), pending_.end());
    pending_.clear();
    SortAndCoalesce(written, from);
    if (written->size() > from) {
      // Pending and dropped pages may have been unmapped since.
      Result<std::vector<Vma>> maps = ReadMaps(env_);
      if (maps.ok()) {
        std::vector<PageRange> mine(written->begin() + static_cast<ptrdiff_t>(from),
                                    written->end());
        ClipToMapped(*maps, &mine);
        written->resize(from);
        written->insert(written->end(), mine.begin(), mine.end());
      }
    }
    stats_.collects++;
    for (size_t i = from; i < written->size(); ++i)
      stats_.pages_reported += (*written)[i].pages(PageSize());
    return Status::Ok();
  }

  TrackerStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  std::vector<PageRange> tracked() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

  void OnDropped(uint64_t start, uint64_t end) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const PageRange& r : ranges_) {
      const uint64_t s = std::max(start, r.start), e = std::min(end, r.end);
      if (s < e) AppendRange(&pending_, s, e);
    }
    SortAndCoalesce(&pending_);
  }

 private:
  Status ClearRefs() {
    PW_ASSIGN_OR_RETURN(size_t n, env_->Pwrite(clear_refs_fd_, "4", 1, 0));
    if (n != 1) return Status::IoError("short write to /proc/self/clear_refs");
    return Status::Ok();
  }

  // Appends the pages of r whose pagemap entry has the soft-dirty bit.
  Status ReadDirty(const PageRange& r, std::vector<PageRange>* out) {
    const uint64_t pg = PageSize();
    std::vector<uint64_t> entries(4096);
    for (uint64_t a = r.start; a < r.end;) {
      const size_t n = std::min<size_t>(entries.size(), (r.end - a) / pg);
      PW_RETURN_IF_ERROR(
          ReadFully(env_, pagemap_fd_, entries.data(), n * 8, static_cast<off_t>(a / pg * 8)));
      for (size_t i = 0; i < n; ++i) {
        if (entries[i] & kPmSoftDirty) AppendRange(out, a + i * pg, a + (i + 1) * pg);
      }
      a += n * pg;
    }
    return Status::Ok();
  }

  Env* const env_;
  const int pagemap_fd_;
  const int clear_refs_fd_;
  const pid_t pid_;
  mutable std::mutex mu_;
  std::vector<PageRange> ranges_;   // sorted
  std::vector<PageRange> pending_;  // written or dropped, not yet reported
  TrackerStats stats_;
};

}  // namespace

Result<std::unique_ptr<Tracker>> NewSoftDirtyTracker(Env* env) {
  PW_ASSIGN_OR_RETURN(int pagemap_fd, env->OpenPagemap(0));
  Result<int> clear = env->Open("/proc/self/clear_refs", O_WRONLY);
  if (!clear.ok()) {
    env->Close(pagemap_fd).IgnoreError();  // undo
    return clear.status().WithContext("soft-dirty tracker");
  }
  return std::unique_ptr<Tracker>(new SoftDirtyTracker(env, pagemap_fd, *clear));
}

Result<std::unique_ptr<Tracker>> CreateSoftDirty(Env* env, const KernelFeatures& features) {
  if (!features.soft_dirty) {
    return Status::NotSupported("tracking backend 'soft-dirty' is not available on this kernel: " +
                                features.soft_dirty_reason +
                                "; use uffd-wp-async, uffd-wp or mprotect");
  }
  return NewSoftDirtyTracker(env);
}

}  // namespace pagewise::track_internal
