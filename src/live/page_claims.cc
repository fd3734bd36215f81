// PageClaims implementation: two atomic bitmaps, futex-style waits on the
// saved words (std::atomic::wait).
#include "live/page_claims.h"

namespace pagewise::live {

PageClaims::PageClaims(uint64_t pages)
    : words_((pages + 63) / 64),
      claimed_(new std::atomic<uint64_t>[words_]),
      saved_(new std::atomic<uint64_t>[words_]) {
  for (size_t w = 0; w < words_; ++w) {
    claimed_[w].store(0, std::memory_order_relaxed);
    saved_[w].store(0, std::memory_order_relaxed);
  }
}

bool PageClaims::Claim(uint64_t i) {
  const uint64_t bit = 1ULL << (i % 64);
  return (claimed_[i / 64].fetch_or(bit, std::memory_order_acq_rel) & bit) == 0;
}

uint64_t PageClaims::ClaimWord(size_t w, uint64_t mask) {
  return ~claimed_[w].fetch_or(mask, std::memory_order_acq_rel) & mask;
}

void PageClaims::MarkSavedWord(size_t w, uint64_t bits) {
  saved_[w].fetch_or(bits, std::memory_order_release);
  saved_[w].notify_all();
}

bool PageClaims::IsSaved(uint64_t i) const {
  return (saved_[i / 64].load(std::memory_order_acquire) >> (i % 64)) & 1;
}

void PageClaims::WaitSaved(uint64_t i) const {
  const uint64_t bit = 1ULL << (i % 64);
  std::atomic<uint64_t>& word = saved_[i / 64];
  uint64_t v = word.load(std::memory_order_acquire);
  while ((v & bit) == 0) {
    word.wait(v, std::memory_order_acquire);
    v = word.load(std::memory_order_acquire);
  }
}

void PageClaims::ReleaseAll() {
  for (size_t w = 0; w < words_; ++w) {
    saved_[w].store(~0ULL, std::memory_order_release);
    saved_[w].notify_all();
  }
}

}  // namespace pagewise::live
