// SpaceMap implementation: an ordered map of disjoint ranges with per-page
// states, split on demand at event boundaries.
#include "restore/space_map.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace pagewise::restore {

void SpaceMap::Account(PageState old_state, PageState new_state) {
  if (old_state == new_state) return;
  if (old_state == PageState::kUnfilled) unfilled_--;
  if (new_state == PageState::kUnfilled) unfilled_++;
  if (old_state == PageState::kBad) bad_--;
  if (new_state == PageState::kBad) bad_++;
}

void SpaceMap::Uncount(const Range& r) {
  for (PageState s : r.pages) Account(s, PageState::kGone);
}

SpaceMap::Map::const_iterator SpaceMap::Containing(uint64_t addr) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return ranges_.end();
  --it;
  return addr < End(it) ? it : ranges_.end();
}

SpaceMap::Map::iterator SpaceMap::Containing(uint64_t addr) {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return ranges_.end();
  --it;
  return addr < End(it) ? it : ranges_.end();
}

void SpaceMap::SplitAt(uint64_t addr) {
  auto it = Containing(addr);
  if (it == ranges_.end() || it->first == addr) return;
  const size_t head = (addr - it->first) / page_size_;
  Range tail;
  tail.src = it->second.src + head * page_size_;
  tail.pages.assign(it->second.pages.begin() + static_cast<ptrdiff_t>(head),
                    it->second.pages.end());
  it->second.pages.resize(head);
  ranges_.emplace(addr, std::move(tail));
}

void SpaceMap::Add(uint64_t start, uint64_t len, uint64_t src) {
  if (len == 0) return;
  Erase(start, start + len);
  Range r;
  r.src = src;
  r.pages.assign(len / page_size_, PageState::kUnfilled);
  unfilled_ += r.pages.size();
  ranges_.emplace(start, std::move(r));
}

void SpaceMap::AddWithStates(uint64_t start, uint64_t src, std::vector<PageState> states) {
  if (states.empty()) return;
  Erase(start, start + states.size() * page_size_);
  Range r;
  r.src = src;
  r.pages = std::move(states);
  for (PageState st : r.pages) Account(PageState::kGone, st);
  ranges_.emplace(start, std::move(r));
}

std::vector<SpaceMap::RangeView> SpaceMap::Ranges() const {
  std::vector<RangeView> out;
  for (const auto& [start, r] : ranges_) out.push_back({start, r.src, &r.pages});
  return out;
}

SpaceMap::Lookup SpaceMap::Find(uint64_t addr) const {
  Lookup out;
  auto it = Containing(addr);
  if (it == ranges_.end()) return out;
  const size_t i = (addr - it->first) / page_size_;
  out.found = true;
  out.src = it->second.src + i * page_size_;
  out.state = it->second.pages[i];
  return out;
}

void SpaceMap::Drop(uint64_t start, uint64_t end) {
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) --it;
  for (; it != ranges_.end() && it->first < end; ++it) {
    const uint64_t lo = std::max(start, it->first);
    const uint64_t hi = std::min(end, End(it));
    for (uint64_t a = lo; a < hi; a += page_size_) {
      PageState& s = it->second.pages[(a - it->first) / page_size_];
      if (s == PageState::kGone) continue;
      Account(s, PageState::kDropped);
      s = PageState::kDropped;
    }
  }
}

void SpaceMap::Erase(uint64_t start, uint64_t end) {
  if (start >= end) return;
  SplitAt(start);
  SplitAt(end);
  auto it = ranges_.lower_bound(start);
  while (it != ranges_.end() && it->first < end) {
    Uncount(it->second);
    it = ranges_.erase(it);
  }
}

void SpaceMap::Move(uint64_t from, uint64_t to, uint64_t len) {
  if (len == 0 || from == to) return;
  SplitAt(from);
  SplitAt(from + len);
  std::vector<std::pair<uint64_t, Range>> moved;
  auto it = ranges_.lower_bound(from);
  while (it != ranges_.end() && it->first < from + len) {
    moved.emplace_back(it->first - from + to, std::move(it->second));
    it = ranges_.erase(it);
  }
  // The destination's previous contents were unmapped by the kernel (an
  // UNMAP event normally said so already); forget them.
  Erase(to, to + len);
  for (auto& [addr, r] : moved) ranges_.emplace(addr, std::move(r));
}

void SpaceMap::Set(uint64_t addr, size_t pages, PageState state) {
  uint64_t a = addr;
  const uint64_t end = addr + pages * page_size_;
  while (a < end) {
    auto it = Containing(a);
    if (it == ranges_.end()) {
      a += page_size_;
      continue;
    }
    const uint64_t hi = std::min(end, End(it));
    for (; a < hi; a += page_size_) {
      PageState& s = it->second.pages[(a - it->first) / page_size_];
      Account(s, state);
      s = state;
    }
  }
}

Run SpaceMap::RunAround(uint64_t addr, size_t window) const {
  Run run;
  auto it = Containing(addr);
  if (it == ranges_.end()) return run;
  const auto& pages = it->second.pages;
  const size_t i = (addr - it->first) / page_size_;
  if (pages[i] != PageState::kUnfilled) return run;
  if (window == 0) window = 1;
  // The window is aligned in the source's flat view (for a VM: in guest
  // physical memory), clipped to the range.
  const uint64_t src = it->second.src + i * page_size_;
  const uint64_t wbytes = window * page_size_;
  const uint64_t wsrc = src - src % wbytes;
  const size_t wlo = wsrc > it->second.src ? (wsrc - it->second.src) / page_size_ : 0;
  const size_t whi = std::min(pages.size(), (wsrc + wbytes - it->second.src) / page_size_);
  size_t lo = i;
  while (lo > wlo && pages[lo - 1] == PageState::kUnfilled) lo--;
  size_t hi = i + 1;
  while (hi < whi && pages[hi] == PageState::kUnfilled) hi++;
  run.addr = it->first + lo * page_size_;
  run.src = it->second.src + lo * page_size_;
  run.pages = hi - lo;
  return run;
}

Run SpaceMap::NextUnfilled(uint64_t addr, size_t max_pages) const {
  Run run;
  auto it = ranges_.upper_bound(addr);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (addr < End(prev)) it = prev;
  }
  for (; it != ranges_.end(); ++it) {
    const auto& pages = it->second.pages;
    size_t i = addr > it->first ? (addr - it->first) / page_size_ : 0;
    while (i < pages.size() && pages[i] != PageState::kUnfilled) i++;
    if (i == pages.size()) continue;
    size_t j = i;
    while (j < pages.size() && j - i < max_pages && pages[j] == PageState::kUnfilled) j++;
    run.addr = it->first + i * page_size_;
    run.src = it->second.src + i * page_size_;
    run.pages = j - i;
    return run;
  }
  return run;
}

void SpaceMap::UnfilledAt(uint64_t src, std::vector<uint64_t>* out) const {
  for (auto it = ranges_.begin(); it != ranges_.end(); ++it) {
    const Range& r = it->second;
    if (src < r.src || src >= r.src + r.pages.size() * page_size_) continue;
    const size_t i = (src - r.src) / page_size_;
    if (r.pages[i] == PageState::kUnfilled) out->push_back(it->first + i * page_size_);
  }
}

bool SpaceMap::IsUnfilledWith(uint64_t addr, uint64_t src) const {
  Lookup l = Find(addr);
  return l.found && l.state == PageState::kUnfilled && l.src == src;
}

size_t SpaceMap::UnfilledPrefix(uint64_t addr, uint64_t src, size_t max_pages) const {
  auto it = Containing(addr);
  if (it == ranges_.end()) return 0;
  const size_t i = (addr - it->first) / page_size_;
  if (it->second.src + i * page_size_ != src) return 0;
  const auto& pages = it->second.pages;
  size_t n = 0;
  while (n < max_pages && i + n < pages.size() && pages[i + n] == PageState::kUnfilled) ++n;
  return n;
}

void SpaceMap::PagesIn(PageState state, std::vector<uint64_t>* out) const {
  for (const auto& [start, r] : ranges_) {
    for (size_t i = 0; i < r.pages.size(); ++i) {
      if (r.pages[i] == state) out->push_back(start + i * page_size_);
    }
  }
}

uint64_t SpaceMap::known_pages() const {
  uint64_t n = 0;
  for (const auto& [start, r] : ranges_) n += r.pages.size();
  return n;
}

}  // namespace pagewise::restore
