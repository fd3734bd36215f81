// Time in the pagewise C++ API: one unit for every duration and timeout.
//
// Durations and timeouts are pagewise::Duration (std::chrono::nanoseconds),
// so callers write std::chrono::milliseconds(50) or 2s and never guess a
// unit. kNoTimeout means "wait without a limit"; a negative timeout is
// taken as zero (do not wait). A wait whose limit expires returns
// Code::kTimeout. Statistics are plain integers of nanoseconds, named *_ns.
//
// Thread safety: plain values and constants.
#ifndef PAGEWISE_TIME_H_
#define PAGEWISE_TIME_H_

#include <chrono>

#include "pagewise/export.h"

namespace pagewise {
PAGEWISE_API_BEGIN

using Duration = std::chrono::nanoseconds;

// "No limit" for every timeout parameter and option.
inline constexpr Duration kNoTimeout = Duration::max();

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_TIME_H_
