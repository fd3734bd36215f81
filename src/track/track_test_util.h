// Helpers for the tracker tests: creating trackers per backend, collecting
// into sets of page indices, and expected-range builders.
//
// Thread safety: plain functions; each test owns its tracker.
#ifndef PAGEWISE_TRACK_TRACK_TEST_UTIL_H_
#define PAGEWISE_TRACK_TRACK_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "pagewise/tracker.h"
#include "track/tracker_env.h"

namespace pagewise::testing {

inline size_t Pg() { return static_cast<size_t>(getpagesize()); }

// Creates a tracker or fails the test (fatal).
inline std::unique_ptr<Tracker> MakeTracker(TrackBackend b, Env* env = nullptr) {
  TrackerOptions o;
  o.backend = b;
  Result<std::unique_ptr<Tracker>> t = CreateTracker(o, env != nullptr ? env : Env::Default());
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return nullptr;
  EXPECT_EQ(t.value()->backend(), b);
  return std::move(t).value();
}

// Collects and returns the indices (relative to base) of reported pages
// inside [base, base + npages), failing the test on error. Pages reported
// outside that window are returned in *outside if given.
inline std::set<size_t> CollectPages(Tracker* t, const void* base, size_t npages,
                                     std::vector<PageRange>* outside = nullptr) {
  std::vector<PageRange> w;
  Status s = t->Collect(&w);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::set<size_t> out;
  const uint64_t b = reinterpret_cast<uint64_t>(base), e = b + npages * Pg();
  for (size_t i = 0; i < w.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(w[i - 1].end, w[i].start) << "ranges not sorted and coalesced";
    }
    EXPECT_LT(w[i].start, w[i].end);
    for (uint64_t a = w[i].start; a < w[i].end; a += Pg()) {
      if (a >= b && a < e) {
        out.insert((a - b) / Pg());
      } else if (outside != nullptr) {
        outside->push_back({a, a + Pg()});
      }
    }
  }
  return out;
}

inline std::string BackendParamName(const ::testing::TestParamInfo<TrackBackend>& info) {
  std::string n(BackendName(info.param));
  for (char& c : n) {
    if (c == '-') c = '_';
  }
  return n;
}

}  // namespace pagewise::testing

#endif  // PAGEWISE_TRACK_TRACK_TEST_UTIL_H_
