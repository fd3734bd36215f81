// Scheduler: demand windows, stream read-ahead and background batches.
#include "restore/engine_schedule.h"

#include <algorithm>

namespace pagewise::restore {

Scheduler::Scheduler(size_t page_size, size_t fault_window_pages, size_t background_batch_pages,
                     const std::vector<uint64_t>* prefetch, bool readahead)
    : ps_(page_size),
      window_(fault_window_pages),
      batch_(background_batch_pages),
      prefetch_(prefetch),
      readahead_(readahead) {}

Run Scheduler::DemandRun(const SpaceMap& map, uint64_t page) const {
  return map.RunAround(page, window_);
}

Run Scheduler::AfterDemand(const SpaceMap& map, SpaceSchedule& s, const Run& run) const {
  const uint64_t end = run.addr + run.pages * ps_;
  // A fault at or just after where the previous demand work ended (within
  // one window: the reader may skip a page or two) continues a stream.
  const uint64_t slack = window_ * ps_;
  const bool continues =
      s.stream_next != 0 && run.addr + slack >= s.stream_next && run.addr <= s.stream_next + slack;
  s.streak = continues ? s.streak + 1 : 0;
  s.stream_next = end;
  s.hints.push_back(end);
  if (s.hints.size() > kMaxHints) s.hints.pop_front();
  if (!readahead_ || s.streak < 2) return Run{};
  // From the third fault of a stream on: read ahead twice the window,
  // doubling per further fault, capped.
  const size_t want = std::min(kMaxReadaheadPages, window_ << std::min<uint32_t>(s.streak - 1, 4));
  Run ra = map.NextUnfilled(end, want);
  if (ra.pages == 0 || ra.addr != end) return Run{};  // not contiguous: no stream to follow
  return ra;
}

void Scheduler::AfterReadahead(SpaceSchedule& s, const Run& run) const {
  const uint64_t end = run.addr + run.pages * ps_;
  s.stream_next = end;
  if (!s.hints.empty()) s.hints.back() = end;
}

std::vector<Run> Scheduler::PlanPrefetch(const SpaceMap& map, SpaceSchedule& s,
                                         uint64_t* waste) const {
  std::vector<Run> runs;
  std::vector<uint64_t> addrs;
  const std::vector<uint64_t>& list = *prefetch_;
  while (s.prefetch_pos < list.size() && addrs.size() < batch_) {
    const size_t before = addrs.size();
    map.UnfilledAt(list[s.prefetch_pos++] & ~static_cast<uint64_t>(ps_ - 1), &addrs);
    if (addrs.size() == before) ++*waste;
  }
  std::sort(addrs.begin(), addrs.end());
  const size_t planned = addrs.size();
  addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
  *waste += planned - addrs.size();  // the same page listed twice in one batch
  for (uint64_t a : addrs) {
    const uint64_t src = map.Find(a).src;
    if (!runs.empty() && runs.back().addr + runs.back().pages * ps_ == a &&
        runs.back().src + runs.back().pages * ps_ == src) {
      runs.back().pages++;
    } else {
      runs.push_back({a, src, 1});
    }
  }
  return runs;
}

std::vector<Run> Scheduler::PlanBackground(const SpaceMap& map, SpaceSchedule& s,
                                           bool background_on, FillKind* kind,
                                           uint64_t* waste) const {
  std::vector<Run> runs;
  if (prefetch_ != nullptr && s.prefetch_pos < prefetch_->size()) {
    runs = PlanPrefetch(map, s, waste);
    if (!runs.empty()) {
      *kind = FillKind::kPrefetch;
      return runs;
    }
  }
  *kind = FillKind::kBackground;
  if (!background_on) return runs;  // prefetch only (background_fill = false)
  while (!s.hints.empty()) {
    const uint64_t h = s.hints.back();
    s.hints.pop_back();
    const Run r = map.NextUnfilled(h, batch_);
    if (r.pages > 0 && r.addr < h + 4 * batch_ * ps_) {
      // Keep following this neighbourhood next time (a sequential reader
      // keeps coming this way).
      s.hints.push_back(r.addr + r.pages * ps_);
      runs.push_back(r);
      return runs;
    }
  }
  Run r = map.NextUnfilled(s.cursor, batch_);
  if (r.pages == 0) r = map.NextUnfilled(0, batch_);
  if (r.pages > 0) {
    s.cursor = r.addr + r.pages * ps_;
    runs.push_back(r);
  }
  return runs;
}

}  // namespace pagewise::restore
