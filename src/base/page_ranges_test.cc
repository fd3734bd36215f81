// base/page_ranges.h: sorting, merging, empty ranges and the untouched prefix.
#include "base/page_ranges.h"

#include <gtest/gtest.h>

namespace pagewise {
namespace {

using R = std::vector<PageRange>;

TEST(PageRanges, SortsMergesTouchingAndOverlappingAndDropsEmpty) {
  EXPECT_EQ(Coalesce({{30, 40}, {10, 20}, {20, 25}, {5, 5}, {35, 50}, {60, 61}, {9, 8}}),
            (R{{10, 25}, {30, 50}, {60, 61}}));
  EXPECT_EQ(Coalesce({}), R{});
  EXPECT_EQ(Coalesce({{7, 7}}), R{});
  EXPECT_EQ(Coalesce({{1, 100}, {2, 3}}), (R{{1, 100}}));
}

TEST(PageRanges, LeavesThePrefixBeforeFromAlone) {
  R v = {{50, 60}, {0, 10}, {30, 40}, {5, 5}, {20, 31}};
  SortAndCoalesce(&v, 2);
  EXPECT_EQ(v, (R{{50, 60}, {0, 10}, {20, 40}}));
  R one = {{3, 4}};
  SortAndCoalesce(&one, 1);
  EXPECT_EQ(one, (R{{3, 4}}));
}

}  // namespace
}  // namespace pagewise
