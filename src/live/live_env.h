// Live snapshots through chosen Envs (internal; pagewise/live.h is the
// public side). Tests inject userfaultfd failures through `env` and image
// I/O failures (ENOSPC, EIO) through `image_env`, separately.
//
// Thread safety: as LiveSnapshot::Start.
#ifndef PAGEWISE_LIVE_LIVE_ENV_H_
#define PAGEWISE_LIVE_LIVE_ENV_H_

#include <memory>
#include <string>
#include <vector>

#include "pagewise/live.h"
#include "sys/env.h"

namespace pagewise {

// LiveSnapshot::Start with userfaultfd, eventfd and scheduling calls made
// through `env` and the image's file operations through `image_env` (both
// not null; they must outlive the snapshot).
Result<std::unique_ptr<LiveSnapshot>> StartLiveSnapshot(const std::string& path,
                                                        const std::vector<Region>& regions,
                                                        const LiveSnapshotOptions& options,
                                                        Env* env, Env* image_env);

}  // namespace pagewise

#endif  // PAGEWISE_LIVE_LIVE_ENV_H_
