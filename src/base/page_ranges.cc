// base/page_ranges.h.
#include "base/page_ranges.h"

#include <algorithm>
#include <cstddef>

namespace pagewise {

void SortAndCoalesce(std::vector<PageRange>* v, size_t from) {
  const auto first = v->begin() + static_cast<std::ptrdiff_t>(from);
  v->erase(std::remove_if(first, v->end(), [](const PageRange& r) { return r.end <= r.start; }),
           v->end());
  if (v->size() - from < 2) return;
  std::sort(v->begin() + static_cast<std::ptrdiff_t>(from), v->end(),
            [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
  size_t out = from;
  for (size_t i = from + 1; i < v->size(); ++i) {
    PageRange& last = (*v)[out];
    const PageRange& r = (*v)[i];
    if (r.start <= last.end) {
      last.end = std::max(last.end, r.end);
    } else {
      (*v)[++out] = r;
    }
  }
  v->resize(out + 1);
}

}  // namespace pagewise
