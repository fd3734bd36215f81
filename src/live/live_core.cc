// LiveCore implementation.
#include "live/live_core.h"

#include <algorithm>

#include "live/copy_user.h"

namespace pagewise::live {

size_t AssignWords(std::vector<LiveRegion>* regions) {
  size_t words = 0;
  for (LiveRegion& r : *regions) {
    r.first_word = words;
    words += static_cast<size_t>((r.pages + 63) / 64);
  }
  return words;
}

namespace {
uint64_t TotalPages(const std::vector<LiveRegion>& regions) {
  uint64_t n = 0;
  for (const LiveRegion& r : regions) n += r.pages;
  return n;
}
uint64_t TotalWordPages(const std::vector<LiveRegion>& regions) {
  if (regions.empty()) return 0;
  const LiveRegion& last = regions.back();
  return (static_cast<uint64_t>(last.first_word) + (last.pages + 63) / 64) * 64;
}
}  // namespace

LiveCore::LiveCore(std::vector<LiveRegion> regions, size_t page_size, size_t fault_queue_pages)
    : regions_(std::move(regions)),
      page_size_(page_size),
      total_pages_(TotalPages(regions_)),
      claims_(TotalWordPages(regions_)),
      queue_(fault_queue_pages, page_size) {}

const LiveRegion* LiveCore::Find(uint64_t addr) const {
  // regions_ is sorted by start: the candidate is the last region starting
  // at or below addr.
  auto it = std::upper_bound(regions_.begin(), regions_.end(), addr,
                             [](uint64_t a, const LiveRegion& r) { return a < r.start; });
  if (it == regions_.begin()) return nullptr;
  --it;
  if (addr - it->start >= it->length) return nullptr;
  return &*it;
}

FaultOutcome LiveCore::SaveForFault(uint64_t page_addr, bool wait_for_saver, size_t around,
                                    uint64_t* saved_first, uint64_t* saved_bits) {
  if (saved_bits != nullptr) *saved_bits = 0;
  const LiveRegion* r = Find(page_addr);
  if (r == nullptr) return FaultOutcome::kNotOurs;
  if (aborted()) return FaultOutcome::kAborted;
  const uint64_t page = (page_addr - r->start) / page_size_;
  const uint64_t idx = static_cast<uint64_t>(r->first_word) * 64 + page;
  const size_t word = static_cast<size_t>(idx / 64);
  // The group: `around` pages aligned within the bitmap word (regions start
  // word-aligned), clipped to the region.
  if (around < 1 || around > 64 || (around & (around - 1)) != 0) around = 1;
  const uint64_t first = page / around * around;
  const uint64_t count = std::min<uint64_t>(around, r->pages - first);
  const uint64_t shift = first % 64;
  const uint64_t own = 1ULL << (page % 64);

  // Buffers first, claims second: a claimed page must be saved, so only
  // claim what there is a buffer for.
  char* bufs[64];
  size_t nbufs = 0;
  uint64_t want = 0;
  if ((claims_.ClaimedWord(word) & own) == 0) {
    char* b = queue_.TryAcquire();
    if (b == nullptr && !aborted()) {
      // The spill area is full: wait for the saver to move pages on (a
      // copy into the writer's staging, not image I/O).
      queue_full_.fetch_add(1, std::memory_order_relaxed);
      b = queue_.Acquire();
    }
    if (b == nullptr) return FaultOutcome::kAborted;
    bufs[nbufs++] = b;
    want = own;
  }
  if (want != 0 && count > 1 && queue_.available() > queue_.capacity() / 2) {
    const uint64_t group = (count == 64 ? ~0ULL : ((1ULL << count) - 1)) << shift;
    uint64_t others = group & ~claims_.ClaimedWord(word) & ~own;
    while (others != 0) {
      char* b = queue_.TryAcquire();
      if (b == nullptr) break;
      bufs[nbufs++] = b;
      want |= others & (~others + 1);  // lowest remaining page
      others &= others - 1;
    }
  }
  const uint64_t got = want == 0 ? 0 : claims_.ClaimWord(word, want);
  uint64_t saved = 0;
  size_t used = 0;
  for (uint64_t bits = got; bits != 0; bits &= bits - 1) {
    const uint64_t p = (word - r->first_word) * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
    char* buf = bufs[used++];
    // The page is still write-protected: its content is the content at T.
    CopyUserMemory(buf, reinterpret_cast<const void*>(r->start + p * page_size_), page_size_);
    claims_.MarkSaved(static_cast<uint64_t>(r->first_word) * 64 + p);
    queue_.Push({r->index, p * page_size_, buf});
    saved |= 1ULL << (p - first);
  }
  for (; used < nbufs; ++used) queue_.Release(bufs[used]);  // raced: claimed elsewhere
  by_fault_.fetch_add(static_cast<uint64_t>(__builtin_popcountll(saved)),
                      std::memory_order_relaxed);
  if (saved_first != nullptr) *saved_first = r->start + first * page_size_;
  if (saved_bits != nullptr) *saved_bits = saved;
  if (((saved >> (page - first)) & 1) != 0) return FaultOutcome::kSaved;
  if (claims_.IsSaved(idx)) return FaultOutcome::kAlreadySaved;
  if (!wait_for_saver) return FaultOutcome::kSaverCopying;
  // The saver claimed the page and is copying it (a memcpy of one bitmap
  // word); the writer must not run until that copy is done. ReleaseAll() on
  // abort ends the wait.
  claims_.WaitSaved(idx);
  return aborted() ? FaultOutcome::kAborted : FaultOutcome::kSaverCopying;
}

void LiveCore::Fail(const Status& status) {
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (error_.ok()) error_ = status;
  }
  aborted_.store(true, std::memory_order_release);
  queue_.Abort();
  claims_.ReleaseAll();
}

Status LiveCore::error() const {
  std::lock_guard<std::mutex> lock(error_mu_);
  return error_;
}

void LiveCore::FillStats(LiveSnapshotStats* s) const {
  s->pages_total = total_pages_;
  s->pages_background = background_.load(std::memory_order_relaxed);
  s->pages_by_fault = by_fault_.load(std::memory_order_relaxed);
  s->faults_handled = faults_.load(std::memory_order_relaxed);
  s->fault_queue_full = queue_full_.load(std::memory_order_relaxed);
  s->fault_service_max_ns = service_.max();
  s->fault_service_p50_ns = service_.Percentile(0.5);
  s->fault_service_p99_ns = service_.Percentile(0.99);
}

}  // namespace pagewise::live
