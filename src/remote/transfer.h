// Helpers shared by push and pull: running a bounded number of transfers
// in parallel, and reading a local layer's header and index bytes as they
// are in its file.
//
// Thread safety: ParallelFor runs `fn` concurrently; `fn` must be safe for
// that. ReadLayerBytes is a plain function.
#ifndef PAGEWISE_REMOTE_TRANSFER_H_
#define PAGEWISE_REMOTE_TRANSFER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "image/layer.h"
#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::remote {

// Runs fn(i) for every i in [0, n) on up to `threads` threads (the caller's
// among them). After the first error no new item starts; that error is
// returned. `after_each` (may be empty) runs on the calling thread after
// each item it ran (progress reporting).
Status ParallelFor(size_t n, int threads, const std::function<Status(size_t)>& fn,
                   const std::function<void()>& after_each = nullptr);

// The header and index bytes of the local image file at `path` (whose
// decoded header is `h`).
Status ReadLayerBytes(Env* env, const std::string& path, const image::Header& h,
                      std::vector<uint8_t>* header, std::vector<uint8_t>* index);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_TRANSFER_H_
