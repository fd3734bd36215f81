// Tracker creation through a chosen Env (internal; pagewise/tracker.h is
// the public side). The library's own layers (checkpoint, snapshot chain,
// check) and tests that inject kernel failures create trackers here.
//
// Thread safety: as Tracker::Create.
#ifndef PAGEWISE_TRACK_TRACKER_ENV_H_
#define PAGEWISE_TRACK_TRACKER_ENV_H_

#include <memory>

#include "pagewise/tracker.h"
#include "sys/env.h"

namespace pagewise {

// Tracker::Create(options) with every kernel call made through `env` (not
// null; it must outlive the tracker).
Result<std::unique_ptr<Tracker>> CreateTracker(const TrackerOptions& options, Env* env);

}  // namespace pagewise

#endif  // PAGEWISE_TRACK_TRACKER_ENV_H_
