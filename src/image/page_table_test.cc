// PageTable: per-page entries and zero ranges agree with a plain per-page
// model under random mixes of Set and SetZeroRange, and huge zero ranges
// cost one interval.
#include "image/page_table.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace pagewise::image {
namespace {

// Expands ForEachSpan into a page -> entry map.
std::map<uint64_t, uint64_t> Expand(const PageTable& t) {
  std::map<uint64_t, uint64_t> out;
  uint64_t last_end = 0;
  bool first = true;
  t.ForEachSpan([&](uint64_t page, uint64_t count, uint64_t entry) {
    EXPECT_TRUE(first || page >= last_end) << "spans out of order at " << page;
    first = false;
    last_end = page + count;
    for (uint64_t p = page; p < page + count; ++p) out[p] = entry;
  });
  return out;
}

TEST(PageTable, RandomSetsAndZeroRangesMatchAPerPageModel) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 40; ++round) {
    PageTable t;
    std::map<uint64_t, uint64_t> model;
    for (int op = 0; op < 300; ++op) {
      const uint64_t page = rng() % 2048;
      if (rng() % 3 == 0) {
        const uint64_t count = 1 + rng() % 700;
        uint64_t absent = 0;
        for (uint64_t p = page; p < page + count; ++p) {
          if (model.count(p) == 0) absent++;
          model[p] = PageTable::kZero;
        }
        ASSERT_EQ(t.SetZeroRange(page, count), absent) << round << "/" << op;
      } else {
        const uint64_t entry = rng() % 4 == 0 ? PageTable::kZero : PageTable::DataEntry(rng() % 99);
        const uint64_t want_old = model.count(page) ? model[page] : PageTable::kAbsent;
        model[page] = entry;
        ASSERT_EQ(t.Set(page, entry), want_old) << round << "/" << op;
      }
    }
    ASSERT_EQ(Expand(t), model) << "round " << round;
  }
}

TEST(PageTable, AHugeZeroRangeIsOneSpan) {
  PageTable t;
  const uint64_t huge = uint64_t{1} << 50;
  EXPECT_EQ(t.SetZeroRange(0, huge), huge);
  EXPECT_EQ(t.Set(12345, PageTable::DataEntry(1)), PageTable::kZero);
  EXPECT_EQ(t.SetZeroRange(huge - 10, 20), 10u);  // extends the tail
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  t.ForEachSpan([&](uint64_t page, uint64_t count, uint64_t) { spans.emplace_back(page, count); });
  const std::vector<std::pair<uint64_t, uint64_t>> want = {
      {0, 12345}, {12345, 1}, {12346, huge + 10 - 12346}};
  EXPECT_EQ(spans, want);
}

}  // namespace
}  // namespace pagewise::image
