// Tracker mode of the live snapshot (LiveSnapshotOptions::tracker).
#include "live/live_snapshot_impl.h"

namespace pagewise::live {

Status LiveSnapshotImpl::BeginTracker() {
  return Status::NotSupported(
      "live snapshot: tracker mode needs the uffd-wp tracker's fault hook, which this build "
      "does not have yet; snapshot without LiveSnapshotOptions::tracker");
}

void LiveSnapshotImpl::EndTracker() {}

}  // namespace pagewise::live
