// SpaceMap: what a lazy restore knows about one address space (one mm).
//
// It maps page-aligned address ranges to offsets in the source's flat view
// and keeps one state per page: not yet filled, filled (installed by us or
// found present), dropped (MADV_DONTNEED/REMOVE: must read as zero, never as
// source data), bad (the source could not be read: faults get poisoned), or
// gone (the kernel said there is no registered mapping any more). The
// userfaultfd events translate to operations on it: REMAP -> Move, REMOVE ->
// Drop, UNMAP -> Erase, FORK -> copy the whole map for the child.
//
// Pure data structure: no system calls, no locking. Thread safety: none;
// the owner (restore::Space) guards it with its mutex.
#ifndef PAGEWISE_RESTORE_SPACE_MAP_H_
#define PAGEWISE_RESTORE_SPACE_MAP_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace pagewise::restore {

enum class PageState : uint8_t {
  kUnfilled = 0,
  kFilled = 1,
  kDropped = 2,
  kBad = 3,
  kGone = 4,
};

// A run of pages: [addr, addr + pages*page_size) backed by source bytes
// starting at src.
struct Run {
  uint64_t addr = 0;
  uint64_t src = 0;
  size_t pages = 0;
};

class SpaceMap {
 public:
  explicit SpaceMap(size_t page_size = 4096) : page_size_(page_size) {}

  size_t page_size() const { return page_size_; }

  // Adds [start, start+len) backed by source offset src, all unfilled.
  // Anything previously known in that range is forgotten first.
  void Add(uint64_t start, uint64_t len, uint64_t src);

  struct Lookup {
    bool found = false;
    uint64_t src = 0;
    PageState state = PageState::kUnfilled;
  };
  // The page containing addr.
  Lookup Find(uint64_t addr) const;

  // UFFD_EVENT_REMOVE: pages in [start, end) become kDropped (whatever they
  // were, except kGone).
  void Drop(uint64_t start, uint64_t end);
  // UFFD_EVENT_UNMAP: forgets [start, end).
  void Erase(uint64_t start, uint64_t end);
  // UFFD_EVENT_REMAP: [from, from+len) now lives at [to, to+len) with its
  // states and source offsets; whatever we knew at the destination is
  // forgotten.
  void Move(uint64_t from, uint64_t to, uint64_t len);

  // Sets `pages` pages from addr (all inside known ranges) to `state`.
  void Set(uint64_t addr, size_t pages, PageState state);

  // The maximal run of kUnfilled pages containing addr, clipped to addr's
  // range and to the window of `window` pages around it that is aligned in
  // the source (src offsets multiple of window * page_size).
  // pages == 0 if addr's page is not kUnfilled.
  Run RunAround(uint64_t addr, size_t window) const;

  // The first run of kUnfilled pages at or after addr (in address order),
  // at most max_pages long, within one range. pages == 0 if none.
  Run NextUnfilled(uint64_t addr, size_t max_pages) const;

  // Addresses of the pages whose source offset is src (page aligned) and
  // whose state is kUnfilled, appended to *out.
  void UnfilledAt(uint64_t src, std::vector<uint64_t>* out) const;

  // True if the page at addr is kUnfilled and backed by source offset src.
  bool IsUnfilledWith(uint64_t addr, uint64_t src) const;
  // How many consecutive pages from addr (at most max_pages, within one
  // range) are kUnfilled and backed by src, src + page_size, ...: one
  // lookup for what IsUnfilledWith checks page by page.
  size_t UnfilledPrefix(uint64_t addr, uint64_t src, size_t max_pages) const;

  // Addresses of every page in `state`, in address order, appended to *out.
  void PagesIn(PageState state, std::vector<uint64_t>* out) const;

  // The ranges in address order (for handing a map over to another
  // process), and adding one back with its states.
  struct RangeView {
    uint64_t start = 0;
    uint64_t src = 0;
    const std::vector<PageState>* pages = nullptr;
  };
  std::vector<RangeView> Ranges() const;
  void AddWithStates(uint64_t start, uint64_t src, std::vector<PageState> states);

  uint64_t unfilled() const { return unfilled_; }
  uint64_t bad() const { return bad_; }
  size_t range_count() const { return ranges_.size(); }
  uint64_t known_pages() const;

 private:
  struct Range {
    uint64_t src = 0;
    std::vector<PageState> pages;
  };
  using Map = std::map<uint64_t, Range>;

  uint64_t End(const Map::const_iterator& it) const {
    return it->first + it->second.pages.size() * page_size_;
  }
  // Ensures no range straddles addr (splits the one that does).
  void SplitAt(uint64_t addr);
  // The range containing addr, or end().
  Map::const_iterator Containing(uint64_t addr) const;
  Map::iterator Containing(uint64_t addr);
  void Account(PageState old_state, PageState new_state);
  void Uncount(const Range& r);

  size_t page_size_;
  Map ranges_;
  uint64_t unfilled_ = 0;
  uint64_t bad_ = 0;
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_SPACE_MAP_H_
