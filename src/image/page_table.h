// PageTable: the writer's in-memory index of one region, a sparse map from
// page number to an entry (absent / zero / data ref): 8 bytes a recorded
// page plus one small block header per 512 pages touched, and ranges of
// zero pages recorded with SetZeroRange as one interval each (16 bytes,
// however many pages), so that recording a huge hole or a huge zero run
// costs nothing per page. A page is in at most one of the two.
//
// Thread safety: none; the writer guards it with its mutex.
#ifndef PAGEWISE_IMAGE_PAGE_TABLE_H_
#define PAGEWISE_IMAGE_PAGE_TABLE_H_

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>

namespace pagewise::image {

class PageTable {
 public:
  // Entry encoding: 0 = absent, 1 = zero, ref + 2 = data at `ref`.
  static constexpr uint64_t kAbsent = 0;
  static constexpr uint64_t kZero = 1;
  static uint64_t DataEntry(uint64_t ref) { return ref + 2; }
  static uint64_t EntryRef(uint64_t e) { return e - 2; }

  // Sets page `page` to `entry`; returns the previous entry.
  uint64_t Set(uint64_t page, uint64_t entry) {
    auto z = ZeroRangeAt(page);
    if (z != zero_.end()) {
      if (entry == kZero) return kZero;
      // Split the zero range around `page`.
      const uint64_t start = z->first, end = z->second;
      zero_.erase(z);
      if (start < page) zero_.emplace(start, page);
      if (page + 1 < end) zero_.emplace(page + 1, end);
      Block(page >> kShift)[page & kMask] = entry;
      return kZero;
    }
    uint64_t* block = Block(page >> kShift);
    uint64_t& slot = block[page & kMask];
    uint64_t old = slot;
    slot = entry;
    return old;
  }

  // Records pages [first, first+count) as zero, in O(log ranges + blocks
  // already touched in the range). Returns how many of them were absent.
  uint64_t SetZeroRange(uint64_t first, uint64_t count) {
    if (count == 0) return 0;
    uint64_t start = first, end = first + count;
    uint64_t recorded = 0;  // pages of [first, end) that were not absent
    // Merge with overlapping or adjacent zero ranges.
    auto it = zero_.upper_bound(start);
    if (it != zero_.begin() && std::prev(it)->second >= start) --it;
    while (it != zero_.end() && it->first <= end) {
      const uint64_t lo = std::max(it->first, first), hi = std::min(it->second, first + count);
      if (lo < hi) recorded += hi - lo;
      start = std::min(start, it->first);
      end = std::max(end, it->second);
      it = zero_.erase(it);
    }
    // Pages of the range held in blocks move into the zero range.
    const uint64_t last = first + count - 1;
    for (auto b = blocks_.lower_bound(first >> kShift);
         b != blocks_.end() && b->first <= (last >> kShift); ++b) {
      const uint64_t base = b->first << kShift;
      const uint64_t from = first > base ? first - base : 0;
      const uint64_t to = std::min<uint64_t>(kBlock, last - base + 1);
      for (uint64_t i = from; i < to; ++i) {
        if (b->second[i] != kAbsent) {
          recorded++;
          b->second[i] = kAbsent;
        }
      }
    }
    zero_.emplace(start, end);
    return count - recorded;
  }

  // Calls fn(first, count, entry) over every non-absent page in
  // increasing order: a zero range as one call (entry kZero), each page
  // held in a block as its own call (count 1).
  template <typename Fn>
  void ForEachSpan(Fn fn) const {
    auto z = zero_.begin();
    for (const auto& [b, arr] : blocks_) {
      for (uint64_t i = 0; i < kBlock; ++i) {
        if (arr[i] == kAbsent) continue;
        const uint64_t page = (b << kShift) | i;
        for (; z != zero_.end() && z->first < page; ++z) fn(z->first, z->second - z->first, kZero);
        fn(page, uint64_t{1}, arr[i]);
      }
    }
    for (; z != zero_.end(); ++z) fn(z->first, z->second - z->first, kZero);
  }

 private:
  static constexpr int kShift = 9;
  static constexpr uint64_t kBlock = uint64_t{1} << kShift;
  static constexpr uint64_t kMask = kBlock - 1;

  std::map<uint64_t, uint64_t>::iterator ZeroRangeAt(uint64_t page) {
    auto it = zero_.upper_bound(page);
    if (it == zero_.begin()) return zero_.end();
    --it;
    return page < it->second ? it : zero_.end();
  }

  uint64_t* Block(uint64_t b) {
    if (last_ != nullptr && last_block_ == b) return last_;
    auto& arr = blocks_[b];
    if (!arr) arr = std::make_unique<uint64_t[]>(kBlock);  // zero-initialised: absent
    last_block_ = b;
    last_ = arr.get();
    return last_;
  }

  std::map<uint64_t, std::unique_ptr<uint64_t[]>> blocks_;
  std::map<uint64_t, uint64_t> zero_;  // [start, end) page ranges, disjoint, not adjacent
  uint64_t last_block_ = 0;
  uint64_t* last_ = nullptr;
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_PAGE_TABLE_H_
