// SpaceMap: the per-mm state a restore keeps, driven like the userfaultfd
// events drive it.
#include "restore/space_map.h"

#include <gtest/gtest.h>

namespace pagewise::restore {
namespace {

constexpr uint64_t P = 4096;

TEST(SpaceMap, AddFindAndCounts) {
  SpaceMap m(P);
  m.Add(10 * P, 8 * P, 100 * P);
  EXPECT_EQ(m.unfilled(), 8u);
  EXPECT_FALSE(m.Find(9 * P).found);
  EXPECT_FALSE(m.Find(18 * P).found);
  SpaceMap::Lookup l = m.Find(13 * P + 5);
  ASSERT_TRUE(l.found);
  EXPECT_EQ(l.src, 103 * P);
  EXPECT_EQ(l.state, PageState::kUnfilled);
  m.Set(13 * P, 2, PageState::kFilled);
  EXPECT_EQ(m.unfilled(), 6u);
  EXPECT_EQ(m.Find(14 * P).state, PageState::kFilled);
  m.Set(15 * P, 1, PageState::kBad);
  EXPECT_EQ(m.unfilled(), 5u);
  EXPECT_EQ(m.bad(), 1u);
}

TEST(SpaceMap, DropMarksEverythingButGone) {
  SpaceMap m(P);
  m.Add(0, 8 * P, 0);
  m.Set(1 * P, 1, PageState::kFilled);
  m.Set(2 * P, 1, PageState::kGone);
  m.Set(3 * P, 1, PageState::kBad);
  m.Drop(0, 5 * P);
  EXPECT_EQ(m.Find(0).state, PageState::kDropped);
  EXPECT_EQ(m.Find(1 * P).state, PageState::kDropped);
  EXPECT_EQ(m.Find(2 * P).state, PageState::kGone);
  EXPECT_EQ(m.Find(3 * P).state, PageState::kDropped);
  EXPECT_EQ(m.Find(5 * P).state, PageState::kUnfilled);
  EXPECT_EQ(m.unfilled(), 3u);
  EXPECT_EQ(m.bad(), 0u);
  // Dropping outside any range is harmless.
  m.Drop(100 * P, 200 * P);
  EXPECT_EQ(m.unfilled(), 3u);
}

TEST(SpaceMap, EraseSplitsRanges) {
  SpaceMap m(P);
  m.Add(0, 10 * P, 50 * P);
  m.Erase(3 * P, 6 * P);
  EXPECT_EQ(m.range_count(), 2u);
  EXPECT_EQ(m.unfilled(), 7u);
  EXPECT_FALSE(m.Find(4 * P).found);
  EXPECT_EQ(m.Find(6 * P).src, 56 * P);
  EXPECT_EQ(m.Find(2 * P).src, 52 * P);
}

TEST(SpaceMap, MoveCarriesStatesAndSources) {
  SpaceMap m(P);
  m.Add(0, 10 * P, 50 * P);
  m.Set(4 * P, 1, PageState::kFilled);
  m.Drop(5 * P, 6 * P);
  m.Move(3 * P, 100 * P, 4 * P);  // pages 3..6 -> 100..103
  EXPECT_FALSE(m.Find(4 * P).found);
  EXPECT_EQ(m.Find(100 * P).src, 53 * P);
  EXPECT_EQ(m.Find(100 * P).state, PageState::kUnfilled);
  EXPECT_EQ(m.Find(101 * P).state, PageState::kFilled);
  EXPECT_EQ(m.Find(102 * P).state, PageState::kDropped);
  EXPECT_EQ(m.Find(103 * P).src, 56 * P);
  EXPECT_EQ(m.Find(7 * P).src, 57 * P);
  EXPECT_EQ(m.unfilled(), 8u);
  // Moving over existing ranges replaces them.
  m.Move(0, 101 * P, 2 * P);
  EXPECT_EQ(m.Find(101 * P).src, 50 * P);
  EXPECT_EQ(m.Find(102 * P).src, 51 * P);
  EXPECT_EQ(m.Find(103 * P).src, 56 * P);
  EXPECT_EQ(m.known_pages(), 8u);
}

TEST(SpaceMap, RunAroundStaysInWindowAndRange) {
  SpaceMap m(P);
  m.Add(4 * P, 40 * P, 4 * P);  // pages 4..43, source pages 4..43
  // Window of 16 around page 20 -> [16, 32).
  restore::Run r = m.RunAround(20 * P, 16);
  EXPECT_EQ(r.addr, 16 * P);
  EXPECT_EQ(r.pages, 16u);
  EXPECT_EQ(r.src, 16 * P);
  // Clipped at the range start: window [0, 16) -> [4, 16).
  r = m.RunAround(5 * P, 16);
  EXPECT_EQ(r.addr, 4 * P);
  EXPECT_EQ(r.pages, 12u);
  // Clipped at the range end: window [32, 48) -> [32, 44).
  r = m.RunAround(40 * P, 16);
  EXPECT_EQ(r.addr, 32 * P);
  EXPECT_EQ(r.pages, 12u);
  // Aligned in the source, not in addresses.
  SpaceMap shifted(P);
  shifted.Add(1003 * P, 64 * P, 0);
  r = shifted.RunAround(1003 * P + 20 * P, 16);
  EXPECT_EQ(r.addr, 1003 * P + 16 * P);
  EXPECT_EQ(r.src, 16 * P);
  EXPECT_EQ(r.pages, 16u);
  // Stops at filled pages.
  m.Set(18 * P, 1, PageState::kFilled);
  m.Set(25 * P, 1, PageState::kDropped);
  r = m.RunAround(20 * P, 16);
  EXPECT_EQ(r.addr, 19 * P);
  EXPECT_EQ(r.src, 19 * P);
  EXPECT_EQ(r.pages, 6u);
  // Not unfilled: empty.
  EXPECT_EQ(m.RunAround(18 * P, 16).pages, 0u);
  EXPECT_EQ(m.RunAround(100 * P, 16).pages, 0u);
}

TEST(SpaceMap, NextUnfilledAndUnfilledAt) {
  SpaceMap m(P);
  m.Add(0, 4 * P, 0);
  m.Add(10 * P, 4 * P, 4 * P);
  m.Set(0, 4, PageState::kFilled);
  m.Set(10 * P, 1, PageState::kFilled);
  restore::Run r = m.NextUnfilled(0, 64);
  EXPECT_EQ(r.addr, 11 * P);
  EXPECT_EQ(r.pages, 3u);
  EXPECT_EQ(r.src, 5 * P);
  r = m.NextUnfilled(0, 2);
  EXPECT_EQ(r.pages, 2u);
  EXPECT_EQ(m.NextUnfilled(14 * P, 64).pages, 0u);
  std::vector<uint64_t> at;
  m.UnfilledAt(6 * P, &at);
  ASSERT_EQ(at.size(), 1u);
  EXPECT_EQ(at[0], 12 * P);
  at.clear();
  m.UnfilledAt(2 * P, &at);  // filled
  EXPECT_TRUE(at.empty());
  EXPECT_TRUE(m.IsUnfilledWith(12 * P, 6 * P));
  EXPECT_FALSE(m.IsUnfilledWith(12 * P, 7 * P));
}

TEST(SpaceMap, ForkCopyIsIndependent) {
  SpaceMap parent(P);
  parent.Add(0, 4 * P, 0);
  parent.Set(0, 1, PageState::kFilled);
  SpaceMap child = parent;
  parent.Set(P, 1, PageState::kFilled);
  child.Drop(2 * P, 3 * P);
  EXPECT_EQ(parent.unfilled(), 2u);
  EXPECT_EQ(child.unfilled(), 2u);
  EXPECT_EQ(child.Find(P).state, PageState::kUnfilled);
  EXPECT_EQ(parent.Find(2 * P).state, PageState::kUnfilled);
}

}  // namespace
}  // namespace pagewise::restore
