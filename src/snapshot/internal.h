// Helpers shared by the snapshot, restore and checkpoint code: region
// validation, page-range arithmetic, the "which pages are populated" scan,
// zero-page detection and a small parallel-for.
//
// Thread safety: free functions are reentrant; a PresenceScanner may be used
// from several threads at once (each scan is an independent ioctl).
#ifndef PAGEWISE_SNAPSHOT_INTERNAL_H_
#define PAGEWISE_SNAPSHOT_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/status.h"
#include "pagewise/tracker.h"
#include "sys/env.h"
#include "sys/pagemap.h"

namespace pagewise::snapshot_internal {

// Checks that each region is non-empty, aligned to its page size, and that
// no two overlap. `what` prefixes error messages. page_size must be
// PageSize(), unless `huge_env` is given (snapshots): then it may also be a
// hugetlbfs page size up to kMaxImagePageSize, which must be the page size
// of the memory there (read from smaps through `huge_env`; a mismatch is
// kInvalidArgument naming both sizes).
Status ValidateRegions(const std::vector<Region>& regions, const char* what,
                       Env* huge_env = nullptr);

// The largest page size an image stores (docs/image-format.md): 16 MiB, so
// 2 MiB hugetlbfs pages can be imaged and 1 GiB pages cannot.
inline constexpr uint64_t kMaxImagePageSize = 16ull << 20;

// Gives several regions whose flat_offset are all 0 consecutive flat
// offsets in the given order; otherwise returns them unchanged.
std::vector<Region> NormalizeRegions(std::vector<Region> regions);

// A piece of a region: [offset, offset+len) bytes within region `region`.
struct Piece {
  uint32_t region = 0;
  uint64_t offset = 0;
  uint64_t len = 0;
};

// Intersects absolute ranges (sorted, coalesced) with the regions: the
// pieces, in region-address order. Parts outside every region are dropped;
// pieces are widened to whole pages of their region's page size (a write
// anywhere in a huge page makes the whole page part of a layer).
std::vector<Piece> Intersect(const std::vector<PageRange>& ranges,
                             const std::vector<Region>& regions);

// Splits pieces into pieces of at most `max_bytes` (page multiple, > 0).
std::vector<Piece> Split(const std::vector<Piece>& pieces, uint64_t max_bytes);

// Which pages of private anonymous memory are populated with real data.
// "Unpopulated" = neither present nor swapped, or mapping the shared zero
// page: such pages read as zero. Built on PAGEMAP_SCAN without WP_MATCHING
// (no side effects on tracking). Conservative: swap-format ptes count as
// populated, and those include the uffd-wp markers a tracker installs on
// empty ptes, so on tracked memory dropped pages are read (as zeros).
class PresenceScanner {
 public:
  // Opens /proc/self/pagemap. If PAGEMAP_SCAN is missing the scanner is
  // disabled: Populated() then reports everything as populated.
  static PresenceScanner Open(Env* env);

  bool enabled() const { return enabled_; }

  // Appends to *out the populated (non-zero-pfn) sub-ranges of [start,end),
  // sorted. Disabled scanner: appends [start,end).
  Status Populated(uint64_t start, uint64_t end, std::vector<PageRange>* out) const;

 private:
  sys::PagemapScanner scanner_;
  bool enabled_ = false;
};

// Runs fn(i) for i in [0, n) on `threads` threads (>= 1; 1 runs inline).
// Stops handing out work after the first error, which it returns.
Status ParallelFor(int threads, size_t n, const std::function<Status(size_t)>& fn);

}  // namespace pagewise::snapshot_internal

#endif  // PAGEWISE_SNAPSHOT_INTERNAL_H_
