// SnapshotChain: a Tracker over fixed regions producing a base and layers.
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "base/page_ranges.h"
#include "pagewise/snapshot.h"
#include "snapshot/internal.h"
#include "snapshot/snapshot_env.h"
#include "track/tracker_env.h"

namespace pagewise {
namespace {

// Absolute form of `path` (layers record their parent's path; an absolute
// one stays valid whatever the working directory is when the chain is read).
Result<std::string> Absolute(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("SnapshotChain: empty image path");
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  if (ec) {
    return ErrnoStatus(ec.value(), "making image path '" + path + "' absolute",
                       "check that the working directory still exists");
  }
  return p.lexically_normal().string();
}

class SnapshotChainImpl final : public SnapshotChain {
 public:
  SnapshotChainImpl(std::vector<Region> regions, SnapshotChainOptions options, Env* env)
      : regions_(std::move(regions)), options_(std::move(options)), env_(env) {}

  Status Start() {
    PW_ASSIGN_OR_RETURN(tracker_, CreateTracker(options_.tracker, env_));
    for (const Region& r : regions_) {
      // On error the tracker's destructor untracks what was tracked so far.
      Status s = tracker_->Track(reinterpret_cast<void*>(r.address), r.length);
      if (!s.ok()) return s.WithContext("SnapshotChain: tracking region '" + r.name + "'");
    }
    return Status::Ok();
  }

  Result<SnapshotStats> Base(const std::string& path_in) override {
    PW_ASSIGN_OR_RETURN(std::string path, Absolute(path_in));
    // Re-arm every page first: whatever is written from now on is reported by
    // the next Layer(), including writes that race the capture below.
    std::vector<PageRange> discard;
    head_.clear();
    layers_ = 0;
    pending_.clear();
    PW_RETURN_IF_ERROR(tracker_->Collect(&discard));
    PW_ASSIGN_OR_RETURN(SnapshotStats stats, SnapshotFull(regions_, path, options_.snapshot, env_));
    head_ = path;
    return stats;
  }

  Result<SnapshotStats> Layer(const std::string& path_in) override {
    if (head_.empty()) {
      return Status::FailedPrecondition("SnapshotChain::Layer: no base image; call Base() first");
    }
    PW_ASSIGN_OR_RETURN(std::string path, Absolute(path_in));
    std::vector<PageRange> written = std::move(pending_);
    pending_.clear();
    Status cs = tracker_->Collect(&written);
    if (!cs.ok()) {
      // Collect re-armed (and appended) some pages before failing: keep them.
      pending_ = Coalesce(std::move(written));
      return cs.WithContext("SnapshotChain::Layer: collecting written pages");
    }
    Result<SnapshotStats> r =
        SnapshotIncremental(written, regions_, head_, path, options_.snapshot, env_);
    if (!r.ok()) {
      // The tracker has re-armed these pages: only we remember them now.
      pending_ = Coalesce(std::move(written));
      return r.status();
    }
    head_ = path;
    ++layers_;
    return r;
  }

  const std::string& head() const override { return head_; }
  int layers() const override { return layers_; }
  const std::vector<Region>& regions() const override { return regions_; }
  Tracker* tracker() const override { return tracker_.get(); }

 private:
  const std::vector<Region> regions_;
  const SnapshotChainOptions options_;
  Env* const env_;
  std::unique_ptr<Tracker> tracker_;
  std::vector<PageRange> pending_;  // collected but not yet in a committed layer
  std::string head_;
  int layers_ = 0;
};

}  // namespace

Result<std::unique_ptr<SnapshotChain>> SnapshotChain::Create(const std::vector<Region>& regions,
                                                             const SnapshotChainOptions& options) {
  return CreateSnapshotChain(regions, options, Env::Default());
}

Result<std::unique_ptr<SnapshotChain>> CreateSnapshotChain(const std::vector<Region>& regions,
                                                           const SnapshotChainOptions& options,
                                                           Env* env) {
  PW_RETURN_IF_ERROR(snapshot_internal::ValidateRegions(regions, "SnapshotChain"));
  auto chain = std::make_unique<SnapshotChainImpl>(snapshot_internal::NormalizeRegions(regions),
                                                   options, env);
  PW_RETURN_IF_ERROR(chain->Start());
  return std::unique_ptr<SnapshotChain>(std::move(chain));
}

}  // namespace pagewise
