// FillGate and Space helpers.
#include "restore/engine_space.h"

namespace pagewise::restore {

void FillGate::EnterFill() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return readers_ == 0; });
  fills_++;
}

void FillGate::ExitFill() {
  bool last;
  {
    std::lock_guard<std::mutex> lk(mu_);
    last = --fills_ == 0 && readers_ > 0;
  }
  if (last) cv_.notify_all();
}

bool FillGate::EnterRead() {
  std::unique_lock<std::mutex> lk(mu_);
  readers_++;
  read_pending_.fetch_add(1, std::memory_order_relaxed);
  const bool waited = fills_ > 0 || reading_;
  cv_.wait(lk, [&] { return fills_ == 0 && !reading_; });
  reading_ = true;
  return waited;
}

void FillGate::ExitRead() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    reading_ = false;
    readers_--;
    read_pending_.fetch_sub(1, std::memory_order_relaxed);
  }
  cv_.notify_all();
}

bool Space::InFlightOverlaps(uint64_t addr, size_t pages, size_t page_size, int self) const {
  const uint64_t end = addr + pages * page_size;
  for (const InFlight& f : inflight) {
    if (f.owner == self) continue;
    if (f.addr < end && addr < f.addr + f.pages * page_size) return true;
  }
  return false;
}

}  // namespace pagewise::restore
