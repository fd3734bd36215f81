// PageClaims: per-page "claimed" and "saved" bits shared by the live
// snapshot's saver and fault paths, so that every page is saved exactly once.
//
// A page is first claimed (by whichever path gets to it first, with one
// atomic fetch_or), then copied, then marked saved. The saver claims 64 pages
// with one operation (ClaimWord); the fault path claims one page. Waiters
// (the tracker-mode fault hook, when the saver holds a page it is copying)
// block in WaitSaved until the page is saved or ReleaseAll() (abort).
//
// Indices are global page numbers chosen by the caller (each region starts
// at a multiple of 64 so that a word never spans two regions).
//
// Thread safety: every method is safe from any thread concurrently.
#ifndef PAGEWISE_LIVE_PAGE_CLAIMS_H_
#define PAGEWISE_LIVE_PAGE_CLAIMS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace pagewise::live {

class PageClaims {
 public:
  // Room for pages [0, pages). All bits start clear.
  explicit PageClaims(uint64_t pages);

  // Claims page i. True if this call claimed it (it was unclaimed).
  bool Claim(uint64_t i);
  // Claims the pages of word w whose bits are set in mask; returns the bits
  // this call claimed (those not claimed before).
  uint64_t ClaimWord(size_t w, uint64_t mask);

  // Marks pages saved and wakes any WaitSaved() on them. Precondition: the
  // caller claimed them and has finished copying them.
  void MarkSaved(uint64_t i) { MarkSavedWord(i / 64, 1ULL << (i % 64)); }
  void MarkSavedWord(size_t w, uint64_t bits);

  bool IsSaved(uint64_t i) const;
  // The claimed bits of word w now (may change right after).
  uint64_t ClaimedWord(size_t w) const { return claimed_[w].load(std::memory_order_acquire); }
  // Blocks until page i is saved or ReleaseAll() was called.
  void WaitSaved(uint64_t i) const;
  // Marks every page saved and wakes every waiter. For aborting: afterwards
  // nobody may rely on "saved" meaning "copied".
  void ReleaseAll();

  size_t words() const { return words_; }
  // Memory held by the bitmaps.
  size_t bytes() const { return words_ * 2 * sizeof(uint64_t); }

 private:
  size_t words_;
  std::unique_ptr<std::atomic<uint64_t>[]> claimed_;
  std::unique_ptr<std::atomic<uint64_t>[]> saved_;
};

}  // namespace pagewise::live

#endif  // PAGEWISE_LIVE_PAGE_CLAIMS_H_
