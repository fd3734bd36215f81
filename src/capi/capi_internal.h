// Shared pieces of the C API implementation (include/pagewise/pagewise.h):
// the error convention (a Status becomes a negative errno and this thread's
// message), conversions between the C structs and the C++ types, and the
// handle structs.
//
// Thread safety: SetError/ClearError touch only thread-local state.
#ifndef PAGEWISE_CAPI_CAPI_INTERNAL_H_
#define PAGEWISE_CAPI_CAPI_INTERNAL_H_

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/pagewise.h"
#include "pagewise/region.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"
#include "pagewise/time.h"
#include "pagewise/tracker.h"

namespace pagewise::capi {

// The negative errno that stands for `code` (the table in pagewise.h).
int ErrnoFor(Code code);

// Records `s` as this thread's error and returns ErrnoFor(s.code()) (< 0).
int SetError(const Status& s);
// For `catch (...)`: records what escaped (std::bad_alloc: -ENOMEM).
int SetException(std::exception_ptr e);
// Argument checks: records kInvalidArgument with `what` and returns -EINVAL.
int InvalidArgument(const std::string& what);

// Runs fn() (returning int), turning a C++ exception into an error: no
// exception crosses the C boundary.
template <typename Fn>
int Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (...) {
    return SetException(std::current_exception());
  }
}

// Converts C regions to Regions (page_size 0: the system page size; names
// copied). kInvalidArgument for a NULL array with count > 0.
Result<std::vector<Region>> ToRegions(const pagewise_region* regions, size_t count);
// Fills *out from `r`; out->name points into `r` (owned by its holder).
void FromRegion(const Region& r, pagewise_region* out);

// int64 nanoseconds (PAGEWISE_NO_TIMEOUT or any negative: no limit) as a
// Duration.
Duration ToDuration(int64_t ns);

Result<TrackBackend> ToBackend(pagewise_backend b);
pagewise_backend FromBackend(TrackBackend b);

}  // namespace pagewise::capi

// The handles (opaque in C).
struct pagewise_tracker {
  std::unique_ptr<pagewise::Tracker> tracker;
  std::vector<pagewise::PageRange> last;  // what the last collect returned
};

struct pagewise_source {
  std::shared_ptr<const pagewise::PageSource> source;
};

struct pagewise_image {
  std::unique_ptr<pagewise::Image> image;
};

#endif  // PAGEWISE_CAPI_CAPI_INTERNAL_H_
