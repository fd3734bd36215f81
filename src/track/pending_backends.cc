// TEMPORARY (first commit of branch track): the uffd-wp, mprotect and
// soft-dirty backends are being written; until then they report
// kNotSupported. This file goes away when they land.
#include "track/track_internal.h"

namespace pagewise::track_internal {

Result<std::unique_ptr<Tracker>> CreateUffdWp(Env*, const KernelFeatures&) {
  return Status::NotSupported("uffd-wp backend: not implemented yet on this branch; use uffd-wp-async");
}
Result<std::unique_ptr<Tracker>> CreateMprotect(Env*, const KernelFeatures&) {
  return Status::NotSupported("mprotect backend: not implemented yet on this branch; use uffd-wp-async");
}
Result<std::unique_ptr<Tracker>> CreateSoftDirty(Env*, const KernelFeatures&) {
  return Status::NotSupported("soft-dirty backend: not implemented yet on this branch");
}

}  // namespace pagewise::track_internal
