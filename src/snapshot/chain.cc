// SnapshotChain: a Tracker over fixed regions producing a base and layers.
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "pagewise/snapshot.h"
#include "snapshot/internal.h"

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

}  // namespace

Result<std::unique_ptr<SnapshotChain>> SnapshotChain::Create(const std::vector<RegionInfo>& regions,
                                                             const SnapshotChainOptions& options) {
  PW_RETURN_IF_ERROR(snapshot_internal::ValidateRegions(regions, "SnapshotChain"));
  std::unique_ptr<SnapshotChain> chain(new SnapshotChain());
  chain->regions_ = snapshot_internal::NormalizeRegions(regions);
  chain->options_ = options;
  TrackerOptions to = options.tracker;
  if (to.env == nullptr) to.env = options.snapshot.env;
  PW_ASSIGN_OR_RETURN(chain->tracker_, Tracker::Create(to));
  for (const RegionInfo& r : chain->regions_) {
    // On error the tracker's destructor untracks what was tracked so far.
    Status s = chain->tracker_->Track(reinterpret_cast<void*>(r.address), r.length);
    if (!s.ok()) return s.WithContext("SnapshotChain: tracking region '" + r.name + "'");
  }
  return chain;
}

SnapshotChain::~SnapshotChain() = default;

Result<SnapshotStats> SnapshotChain::Base(const std::string& path_in) {
  PW_ASSIGN_OR_RETURN(std::string path, Absolute(path_in));
  // Re-arm every page first: whatever is written from now on is reported by
  // the next Layer(), including writes that race the capture below.
  std::vector<PageRange> discard;
  head_.clear();
  layers_ = 0;
  pending_.clear();
  PW_RETURN_IF_ERROR(tracker_->Collect(&discard));
  PW_ASSIGN_OR_RETURN(SnapshotStats stats, SnapshotFull(regions_, path, options_.snapshot));
  head_ = path;
  return stats;
}

Result<SnapshotStats> SnapshotChain::Layer(const std::string& path_in) {
  if (head_.empty()) {
    return Status::FailedPrecondition("SnapshotChain::Layer: no base image; call Base() first");
  }
  PW_ASSIGN_OR_RETURN(std::string path, Absolute(path_in));
  std::vector<PageRange> written = std::move(pending_);
  pending_.clear();
  Status cs = tracker_->Collect(&written);
  if (!cs.ok()) {
    // Collect re-armed (and appended) some pages before failing: keep them.
    pending_ = snapshot_internal::Coalesce(std::move(written));
    return cs.WithContext("SnapshotChain::Layer: collecting written pages");
  }
  Result<SnapshotStats> r = SnapshotIncremental(written, regions_, head_, path, options_.snapshot);
  if (!r.ok()) {
    // The tracker has re-armed these pages: only we remember them now.
    pending_ = snapshot_internal::Coalesce(std::move(written));
    return r.status();
  }
  head_ = path;
  ++layers_;
  return r;
}

}  // namespace pagewise
