// Backend names and what this kernel offers each backend.
#include <string>

#include "pagewise/tracker.h"
#include "track/memory_events.h"
#include "track/track_internal.h"

namespace pagewise {

std::string_view BackendName(TrackBackend backend) {
  switch (backend) {
    case TrackBackend::kAuto:
      return "auto";
    case TrackBackend::kUffdWpAsync:
      return "uffd-wp-async";
    case TrackBackend::kUffdWp:
      return "uffd-wp";
    case TrackBackend::kMprotect:
      return "mprotect";
    case TrackBackend::kSoftDirty:
      return "soft-dirty";
    case TrackBackend::kTwoStep:
      return "two-step";
  }
  return "unknown";
}

Result<TrackBackend> ParseBackend(std::string_view name) {
  for (TrackBackend b :
       {TrackBackend::kAuto, TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
        TrackBackend::kMprotect, TrackBackend::kSoftDirty, TrackBackend::kTwoStep}) {
    if (name == BackendName(b)) return b;
  }
  return Status::InvalidArgument("unknown tracking backend '" + std::string(name) +
                                 "'; valid: auto, uffd-wp-async, uffd-wp, mprotect, soft-dirty, "
                                 "two-step");
}

std::vector<BackendInfo> DescribeBackends(const KernelFeatures& f) {
  using namespace uffd_feature;
  std::vector<BackendInfo> out;

  BackendInfo async{"uffd-wp-async", false, true, ""};
  Status s = RequireUffd(f, kPagefaultFlagWp | kWpAsync | kWpUnpopulated, "uffd-wp-async");
  if (s.ok()) s = RequirePagemapScan(f, "uffd-wp-async");
  async.available = s.ok();
  async.reason = s.ok() ? "" : s.message();
  out.push_back(async);

  BackendInfo sync{"uffd-wp", false, true, ""};
  s = RequireUffd(f, kPagefaultFlagWp, "uffd-wp");
  sync.available = s.ok();
  if (!s.ok()) {
    sync.reason = s.message();
  } else if (!f.HasUffd(kWpUnpopulated)) {
    sync.reason = "without WP_UNPOPULATED, never-touched pages are pre-faulted at Track()";
  }
  out.push_back(sync);

  const bool interposed = track_internal::InterposersLinked();
  out.push_back({"mprotect", interposed, true,
                 interposed ? "one per process; the program must change protection of tracked "
                              "memory only through libc mprotect/mremap and drop pages only "
                              "through libc madvise (libpagewise-interpose interposes them), and "
                              "keep pagewise's SIGSEGV handler installed"
                            : track_internal::kMprotectNeedsInterposers});

  BackendInfo sd{"soft-dirty", f.soft_dirty, false, ""};
  sd.reason = f.soft_dirty
                  ? "not atomic: clear_refs is process-wide and separate from reading pagemap, "
                    "so a write racing a collect can be lost"
                  : f.soft_dirty_reason;
  out.push_back(sd);

  // Last: never chosen automatically, and not atomic by design.
  BackendInfo two{"two-step", async.available, false,
                  async.available ? "not atomic, on purpose (a negative control): reports written "
                                    "pages without re-arming them and re-arms them at the next "
                                    "collect, so a write between the caller's copy and that "
                                    "re-arm is lost"
                                  : async.reason};
  out.push_back(two);
  return out;
}

}  // namespace pagewise
