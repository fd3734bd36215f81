// PageTable: the writer's in-memory index of one region, a sparse map from
// page number to an entry (absent / zero / data ref), 8 bytes a recorded
// page plus one small block header per 512 pages touched.
//
// Thread safety: none; the writer guards it with its mutex.
#ifndef PAGEWISE_IMAGE_PAGE_TABLE_H_
#define PAGEWISE_IMAGE_PAGE_TABLE_H_

#include <cstdint>
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
    uint64_t* block = Block(page >> kShift);
    uint64_t& slot = block[page & kMask];
    uint64_t old = slot;
    slot = entry;
    return old;
  }

  // Calls fn(page, entry) for every non-absent page in increasing order.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (const auto& [b, arr] : blocks_) {
      for (uint64_t i = 0; i < kBlock; ++i) {
        if (arr[i] != kAbsent) fn((b << kShift) | i, arr[i]);
      }
    }
  }

 private:
  static constexpr int kShift = 9;
  static constexpr uint64_t kBlock = uint64_t{1} << kShift;
  static constexpr uint64_t kMask = kBlock - 1;

  uint64_t* Block(uint64_t b) {
    if (last_ != nullptr && last_block_ == b) return last_;
    auto& arr = blocks_[b];
    if (!arr) arr = std::make_unique<uint64_t[]>(kBlock);  // zero-initialised: absent
    last_block_ = b;
    last_ = arr.get();
    return last_;
  }

  std::map<uint64_t, std::unique_ptr<uint64_t[]>> blocks_;
  uint64_t last_block_ = 0;
  uint64_t* last_ = nullptr;
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_PAGE_TABLE_H_
