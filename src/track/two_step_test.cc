// The two-step tracker (track/two_step.cc) is a negative control: it must
// lose a write that lands between the caller's copy of a reported page and
// the re-arm at the start of the next collect, deterministically, while the
// atomic uffd-wp-async backend keeps it. (`pagewise check --backend
// two-step` shows the same loss under racing threads; that run is timing
// based and is recorded in docs/races.md, not asserted here.)
#include <cstring>
#include <set>
#include <vector>

#include "testing/test_util.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

void Poke(char* p, char v) { *static_cast<volatile char*>(p) = v; }

// Track two pages, write page 0, collect and copy it (the dump), write it
// again, then collect twice more. Returns the pages each of the last two
// collects reported.
std::vector<std::set<size_t>> WriteAfterTheCopy(TrackBackend backend, char* copied) {
  std::unique_ptr<Tracker> t = MakeTracker(backend);
  if (t == nullptr) return {};
  Mapping m(2 * Pg());
  EXPECT_TRUE(t->Track(m.data(), m.size()).ok());
  Poke(m.page(0), 1);
  EXPECT_EQ(CollectPages(t.get(), m.data(), 2), (std::set<size_t>{0}));
  *copied = *m.page(0);  // the caller copies the reported page...
  Poke(m.page(0), 2);    // ...and the program writes it again
  std::vector<std::set<size_t>> out;
  out.push_back(CollectPages(t.get(), m.data(), 2));
  out.push_back(CollectPages(t.get(), m.data(), 2));
  return out;
}

TEST(TwoStepTracker, LosesAWriteBetweenTheCopyAndTheReArm) {
  char copied = 0;
  const std::vector<std::set<size_t>> two_step = WriteAfterTheCopy(TrackBackend::kTwoStep, &copied);
  ASSERT_EQ(two_step.size(), 2u);
  EXPECT_EQ(copied, 1);
  // The next collect re-arms page 0 first (marking it clean) and so never
  // reports the second write: the snapshot keeps the stale copy.
  EXPECT_TRUE(two_step[0].empty() && two_step[1].empty())
      << "the two-step tracker reported the write it is meant to lose";
}

TEST(TwoStepTracker, TheAtomicBackendKeepsThatWrite) {
  char copied = 0;
  const std::vector<std::set<size_t>> atomic =
      WriteAfterTheCopy(TrackBackend::kUffdWpAsync, &copied);
  ASSERT_EQ(atomic.size(), 2u);
  EXPECT_EQ(atomic[0], (std::set<size_t>{0}));
  EXPECT_TRUE(atomic[1].empty());
}

}  // namespace
}  // namespace pagewise::testing
