// Page ranges: the one way pagewise sorts and merges lists of [start, end)
// ranges (written pages from a tracker, pieces of a snapshot).
//
// Thread safety: pure functions of their arguments; reentrant.
#ifndef PAGEWISE_BASE_PAGE_RANGES_H_
#define PAGEWISE_BASE_PAGE_RANGES_H_

#include <cstddef>
#include <vector>

#include "pagewise/tracker.h"  // PageRange

namespace pagewise {

// Sorts (*v)[from..] by start, drops its empty ranges (end <= start) and
// merges the ranges in it that touch or overlap, in place. (*v)[..from) is
// left as it is (a caller appends new ranges after coalesced ones). No
// allocation. Precondition: from <= v->size().
void SortAndCoalesce(std::vector<PageRange>* v, size_t from = 0);

// `ranges` sorted, without empty ranges, touching and overlapping ones
// merged.
inline std::vector<PageRange> Coalesce(std::vector<PageRange> ranges) {
  SortAndCoalesce(&ranges);
  return ranges;
}

}  // namespace pagewise

#endif  // PAGEWISE_BASE_PAGE_RANGES_H_
