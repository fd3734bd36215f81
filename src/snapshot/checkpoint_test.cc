// Checkpoint / Rewind: exactness over many rounds of random writes and
// MADV_DONTNEED, on every tracking backend this kernel offers.
#include "pagewise/checkpoint.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/probe.h"
#include "pagewise/snapshot.h"
#include "snapshot/snapshot_test_util.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::testing {
namespace {

// First differing page, or -1.
long FirstDiff(const char* a, const char* b, size_t len) {
  for (size_t off = 0; off < len; off += Pg()) {
    if (std::memcmp(a + off, b + off, Pg()) != 0) return static_cast<long>(off / Pg());
  }
  return -1;
}

struct BackendCase {
  TrackBackend backend;
  int rounds;
};

class RewindTest : public ::testing::TestWithParam<BackendCase> {};

// 100 rounds (fewer on the slow synchronous backends): random writes of a
// seeded mix, including writes to never-populated pages and MADV_DONTNEED
// of ranges; each Rewind must give back the saved memory exactly, having
// put back at least the touched pages and far fewer than all.
TEST_P(RewindTest, RandomWritesAndDropsRewindExactly) {
  const BackendCase bc = GetParam();
  const size_t pages = 1024;
  Mapping m(pages * Pg());
  PageMixer mix(1234 + static_cast<int>(bc.backend));
  for (size_t i = 0; i < pages; ++i) {
    if (i % 4 != 1) mix.WritePage(m.page(i));  // a quarter never populated
  }
  const std::vector<char> ref(m.data(), m.data() + m.size());
  CheckpointOptions co;
  co.backend = bc.backend;
  Result<std::unique_ptr<Checkpoint>> cp = Checkpoint::Create({MakeRegion(m.data(), m.size())}, co);
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  EXPECT_EQ((*cp)->stats().region_pages, pages);
  size_t nonzero = 0;
  for (size_t i = 0; i < pages; ++i) {
    nonzero += !std::all_of(m.page(i), m.page(i) + Pg(), [](char c) { return c == 0; });
  }
  EXPECT_EQ((*cp)->stats().saved_pages, nonzero);

  for (int round = 0; round < bc.rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::set<uint64_t> touched = mix.Pick(pages, 1 + mix.Next(40));
    for (uint64_t i : touched) mix.WritePage(m.page(i));
    if (round % 3 == 0) {
      const uint64_t at = mix.Next(pages - 16), n = 1 + mix.Next(16);
      ASSERT_EQ(0, madvise(m.page(at), n * Pg(), MADV_DONTNEED));
      for (uint64_t i = at; i < at + n; ++i) touched.insert(i);
    }
    if (round % 5 == 0) m.page(mix.Next(pages))[17] ^= 1;  // single byte
    Result<RewindStats> rs = (*cp)->Rewind();
    ASSERT_TRUE(rs.ok()) << rs.status().ToString();
    ASSERT_EQ(FirstDiff(m.data(), ref.data(), m.size()), -1);
    EXPECT_GE(rs->pages_restored, touched.size());
    EXPECT_LT(rs->pages_restored, pages / 2);  // no full copy
    EXPECT_EQ(rs->pages_restored, rs->pages_copied + rs->pages_zeroed);
  }
  EXPECT_EQ((*cp)->stats().rewinds, static_cast<uint64_t>(bc.rounds));
  // A rewind with nothing written restores nothing (exact tracking on 4K pages).
  Result<RewindStats> idle = (*cp)->Rewind();
  ASSERT_TRUE(idle.ok());
  EXPECT_EQ(idle->pages_restored, 0u);
}

std::vector<BackendCase> Backends() {
  std::vector<BackendCase> out;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (!b.available || !b.atomic) continue;
    Result<TrackBackend> tb = ParseBackend(b.name);
    if (!tb.ok()) continue;
    // Backends the tracker cannot create here (not built yet) are not listed.
    TrackerOptions to;
    to.backend = *tb;
    if (!Tracker::Create(to).ok()) continue;
    out.push_back({*tb, *tb == TrackBackend::kUffdWpAsync ? 100 : 25});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, RewindTest, ::testing::ValuesIn(Backends()),
                         [](const auto& info) {
                           std::string n(BackendName(info.param.backend));
                           for (char& c : n) c = (c == '-') ? '_' : c;
                           return n;
                         });

TEST(CheckpointTest, SharedMemfdRegionIsZeroFilledNotDropped) {
  Mapping shm(64 * Pg(), MemKind::kMemfdShared);
  PageMixer mix(77);
  for (size_t i = 0; i < 64; ++i) mix.WritePage(shm.page(i), 40, 20);
  const std::vector<char> ref(shm.data(), shm.data() + shm.size());
  Result<std::unique_ptr<Checkpoint>> cp =
      Checkpoint::Create({MakeRegion(shm.data(), shm.size(), RegionKind::kShared)});
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  for (int round = 0; round < 20; ++round) {
    for (uint64_t i : mix.Pick(64, 10)) mix.WritePage(shm.page(i), 0, 0);
    Result<RewindStats> rs = (*cp)->Rewind();
    ASSERT_TRUE(rs.ok()) << rs.status().ToString();
    ASSERT_EQ(FirstDiff(shm.data(), ref.data(), shm.size()), -1) << "round " << round;
  }
  // Through another mapping of the memfd: the file itself was rewound.
  void* again = mmap(nullptr, shm.size(), PROT_READ, MAP_SHARED, shm.memfd(), 0);
  ASSERT_NE(again, MAP_FAILED);
  EXPECT_EQ(FirstDiff(static_cast<char*>(again), ref.data(), shm.size()), -1);
  munmap(again, shm.size());
}

TEST(CheckpointTest, UpdateMovesTheCheckpoint) {
  const size_t pages = 256;
  Mapping m(pages * Pg());
  PageMixer mix(31);
  for (size_t i = 0; i < pages; ++i) mix.WritePage(m.page(i));
  Result<std::unique_ptr<Checkpoint>> cp = Checkpoint::Create({MakeRegion(m.data(), m.size())});
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  std::set<uint64_t> changed = mix.Pick(pages, 30);
  for (uint64_t i : changed) mix.WritePage(m.page(i), 50, 0);  // half become zero
  Result<uint64_t> taken = (*cp)->Update();
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_EQ(*taken, changed.size());
  const std::vector<char> ref(m.data(), m.data() + m.size());
  for (int round = 0; round < 10; ++round) {
    for (uint64_t i : mix.Pick(pages, 20)) mix.WritePage(m.page(i));
    ASSERT_TRUE((*cp)->Rewind().ok());
    ASSERT_EQ(FirstDiff(m.data(), ref.data(), m.size()), -1) << "round " << round;
  }
  EXPECT_EQ((*cp)->stats().updates, 1u);
}

// Writers on other threads between rewinds (joined before each Rewind, as
// the contract requires); run under TSan this checks the tracking handoff.
TEST(CheckpointTest, WritesFromOtherThreadsAreRewound) {
  const size_t pages = 512;
  Mapping m(pages * Pg());
  PageMixer mix(55);
  for (size_t i = 0; i < pages; ++i) mix.WritePage(m.page(i));
  const std::vector<char> ref(m.data(), m.data() + m.size());
  Result<std::unique_ptr<Checkpoint>> cp = Checkpoint::Create({MakeRegion(m.data(), m.size())});
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  for (int round = 0; round < 10; ++round) {
    std::vector<std::thread> writers;
    for (int t = 0; t < 3; ++t) {
      // Each writer owns the pages t, t+3, t+6...: no two threads race.
      writers.emplace_back([&m, t, round] {
        PageMixer local(1000 * round + t);
        for (int k = 0; k < 20; ++k) local.WritePage(m.page(local.Next(pages / 3) * 3 + t));
      });
    }
    for (std::thread& w : writers) w.join();
    Result<RewindStats> rs = (*cp)->Rewind();
    ASSERT_TRUE(rs.ok()) << rs.status().ToString();
    ASSERT_EQ(FirstDiff(m.data(), ref.data(), m.size()), -1) << "round " << round;
    EXPECT_GT(rs->pages_restored, 0u);
  }
}

// A Rewind that fails half way (madvise error) is completed by the next
// one: the pages it had collected are not forgotten.
TEST(CheckpointTest, FailedRewindIsCompletedByTheNext) {
  const size_t pages = 64;
  Mapping m(pages * Pg());
  PageMixer mix(3);
  for (size_t i = 0; i < pages; ++i) {
    if (i < 10 || i >= 20) mix.FillRandom(m.page(i));  // [10, 20) stay empty
  }
  const std::vector<char> ref(m.data(), m.data() + m.size());
  FaultEnv fenv;
  CheckpointOptions co;
  Result<std::unique_ptr<Checkpoint>> cp =
      CreateCheckpoint({MakeRegion(m.data(), m.size())}, co, &fenv);
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  for (size_t i = 5; i < 26; ++i) mix.FillRandom(m.page(i));
  fenv.Inject(Op::kMadvise, {EIO, 0, 0, 1});
  Result<RewindStats> bad = (*cp)->Rewind();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(fenv.Fired(Op::kMadvise), 1);
  EXPECT_NE(bad.status().message().find("Rewind() again"), std::string::npos)
      << bad.status().ToString();
  EXPECT_NE(FirstDiff(m.data(), ref.data(), m.size()), -1);  // really half done
  fenv.Clear();
  Result<RewindStats> good = (*cp)->Rewind();
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_GE(good->pages_restored, 21u);
  // Zero at the checkpoint: dropped again (checked before reading it).
  EXPECT_FALSE(Resident(m.page(12)));
  EXPECT_EQ(FirstDiff(m.data(), ref.data(), m.size()), -1);
}

TEST(CheckpointTest, RejectsBadRegions) {
  Mapping m(8 * Pg());
  EXPECT_EQ(Checkpoint::Create({MakeRegion(m.data() + 8, Pg())}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(Checkpoint::Create({}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Checkpoint::Create({MakeRegion(m.data(), 4 * Pg()), MakeRegion(m.page(3), 2 * Pg())})
                .status()
                .code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace pagewise::testing
