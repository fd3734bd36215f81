// Internal helpers shared by the Tracker backends (src/track/): input
// validation, /proc/self/maps parsing through Env, range bookkeeping, result
// coalescing, and the per-backend factories Tracker::Create dispatches to.
//
// Thread safety: the free functions are stateless and safe from any thread.
// None of this is public API.
#ifndef PAGEWISE_TRACK_TRACK_INTERNAL_H_
#define PAGEWISE_TRACK_TRACK_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/env.h"
#include "pagewise/probe.h"
#include "pagewise/status.h"
#include "pagewise/tracker.h"

namespace pagewise::track_internal {

// One line of /proc/self/maps.
struct Vma {
  uint64_t start = 0;
  uint64_t end = 0;
  int prot = 0;         // PROT_READ | PROT_WRITE | PROT_EXEC
  bool shared = false;  // 's' in the perms column
  uint64_t inode = 0;
  std::string path;     // "" for anonymous, "[heap]", "/memfd:x (deleted)", ...
  // True for memory the tracker can treat as anonymous private memory.
  bool anonymous_private() const { return !shared && inode == 0 && (path.empty() || path[0] == '['); }
  // True for memfd / MAP_SHARED|MAP_ANONYMOUS / /dev/shm (shmem) mappings.
  bool shmem() const;
};

// Reads /proc/self/maps through env->Open/Pread (so tests can inject
// failures). Returns the VMAs sorted by address.
Result<std::vector<Vma>> ReadMaps(Env* env);

// The VMAs covering [start, end), clipped to it. Error kInvalidArgument
// naming the first unmapped address if any byte of the range is unmapped.
// `op` names the calling operation for the message ("Track").
Result<std::vector<Vma>> CoveringVmas(Env* env, uint64_t start, uint64_t end, const char* op);

// Checks what every backend's Track/Untrack needs of its arguments: non-null,
// page aligned address and length, len > 0, no address-space wraparound.
// Returns kInvalidArgument with the cause and the fix.
Status CheckRangeArgs(const void* addr, size_t len, const char* op);

// `tracked` must be sorted and non-overlapping. kAlreadyExists if
// [start, end) overlaps one of them (the message names which).
Status CheckNoOverlap(const std::vector<PageRange>& tracked, uint64_t start, uint64_t end);

// Sorts (*v)[from..] and merges touching/overlapping ranges in it.
void SortAndCoalesce(std::vector<PageRange>* v, size_t from = 0);

// Appends [start, end) to *v, merging with the last element when they touch.
inline void AppendRange(std::vector<PageRange>* v, uint64_t start, uint64_t end) {
  if (start >= end) return;
  if (!v->empty() && v->back().end >= start && v->back().start <= start) {
    if (end > v->back().end) v->back().end = end;
    return;
  }
  v->push_back({start, end});
}

// "[0x7f..., 0x7f...)" for messages.
std::string RangeString(uint64_t start, uint64_t end);

// Error for an unknown Untrack range.
Status NotTracked(uint64_t start, uint64_t end, const std::vector<PageRange>& tracked);

// Backend factories (one per backend file). `env` is never null.
Result<std::unique_ptr<Tracker>> CreateUffdWpAsync(Env* env, const KernelFeatures& features);
Result<std::unique_ptr<Tracker>> CreateUffdWp(Env* env, const KernelFeatures& features);
Result<std::unique_ptr<Tracker>> CreateMprotect(Env* env, const KernelFeatures& features);
Result<std::unique_ptr<Tracker>> CreateSoftDirty(Env* env, const KernelFeatures& features);

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_TRACK_INTERNAL_H_
