// Snapshots: memory -> image -> memory, incremental chains built from a
// tracker, MADV_DONTNEED between layers, truncated chains.
#include "pagewise/snapshot.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "snapshot/snapshot_test_util.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::testing {
namespace {

std::vector<char> Copy(const char* p, size_t len) { return std::vector<char>(p, p + len); }

// Restores `path` into fresh memory and compares every region with `want`.
void ExpectRestores(const std::string& path, const std::vector<std::vector<char>>& want) {
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(path);
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  ASSERT_EQ((*mem)->regions().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const RestoredRegion& r = (*mem)->regions()[i];
    ASSERT_EQ(r.info.length, want[i].size());
    ASSERT_TRUE(r.owned);
    for (size_t off = 0; off < want[i].size(); off += Pg()) {
      ASSERT_EQ(0, std::memcmp(r.data + off, want[i].data() + off, Pg()))
          << path << ": region " << i << " page " << off / Pg() << " differs";
    }
  }
}

class FullSnapshotTest : public ::testing::TestWithParam<Compression> {};

TEST_P(FullSnapshotTest, MemoryImageMemoryIsByteIdentical) {
  TempDir dir;
  const size_t anon_pages = 300, shm_pages = 64;
  Mapping anon(anon_pages * Pg());
  Mapping shm(shm_pages * Pg(), MemKind::kMemfdShared);
  PageMixer mix(42);
  // Leave every 7th anonymous page untouched (never populated).
  for (size_t i = 0; i < anon_pages; ++i) {
    if (i % 7 != 3) mix.WritePage(anon.page(i));
  }
  for (size_t i = 0; i < shm_pages; ++i) mix.WritePage(shm.page(i));
  std::vector<Region> regions = {
      MakeRegion(anon.data(), anon.size(), RegionKind::kAnonymous, PROT_READ | PROT_WRITE, "heap"),
      MakeRegion(shm.data(), shm.size(), RegionKind::kShared, PROT_READ | PROT_WRITE, "shm")};
  SnapshotOptions so;
  so.compression = GetParam();
  so.batch_bytes = 64 * Pg();  // several batches per region
  const std::string path = dir.File("full.img");
  Result<SnapshotStats> st = SnapshotFull(regions, path, so);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const uint64_t never_touched = (anon_pages + 3) / 7;
  EXPECT_EQ(st->pages_unpopulated, never_touched);
  EXPECT_EQ(st->pages_read, anon_pages + shm_pages - never_touched);
  EXPECT_EQ(st->image.pages, st->pages_read);
  EXPECT_GT(st->image.zero_pages, 0u);
  EXPECT_GT(st->image.duplicate_pages, 0u);

  const std::vector<std::vector<char>> want = {Copy(anon.data(), anon.size()),
                                               Copy(shm.data(), shm.size())};
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(path);
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  ASSERT_EQ((*mem)->regions().size(), 2u);
  EXPECT_EQ((*mem)->regions()[0].info.name, "heap");
  EXPECT_EQ((*mem)->regions()[1].info.kind, RegionKind::kShared);
  // Zero pages stay unpopulated in the fresh mapping; data pages are there.
  // (Checked before anything below reads the memory.)
  for (size_t r = 0; r < 2; ++r) {
    const char* base = (*mem)->regions()[r].data;
    for (size_t i = 0; i < want[r].size() / Pg(); ++i) {
      const bool zero = std::all_of(want[r].begin() + i * Pg(), want[r].begin() + (i + 1) * Pg(),
                                    [](char c) { return c == 0; });
      ASSERT_EQ(Resident(base + i * Pg()), !zero) << "region " << r << " page " << i;
    }
  }
  EXPECT_EQ((*mem)->stats().data_pages + (*mem)->stats().zero_pages, anon_pages + shm_pages);
  for (size_t r = 0; r < 2; ++r) {
    ASSERT_EQ(0, std::memcmp((*mem)->regions()[r].data, want[r].data(), want[r].size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Compressions, FullSnapshotTest,
                         ::testing::Values(Compression::kNone, Compression::kLz4,
                                           Compression::kZstd),
                         [](const auto& info) { return std::string(CompressionName(info.param)); });

TEST(SnapshotTest, ThreadsCaptureTheSameBytes) {
  TempDir dir;
  Mapping m(512 * Pg());
  PageMixer mix(7);
  for (size_t i = 0; i < 512; ++i) mix.WritePage(m.page(i));
  SnapshotOptions so;
  so.threads = 3;
  so.batch_bytes = 16 * Pg();
  ASSERT_TRUE(SnapshotFull({MakeRegion(m.data(), m.size())}, dir.File("t.img"), so).ok());
  EagerRestoreOptions ro;
  ro.threads = 3;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("t.img"), ro);
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  EXPECT_EQ(0, std::memcmp((*mem)->regions()[0].data, m.data(), m.size()));
}

TEST(SnapshotTest, RejectsBadRegionsAndLeavesNoFile) {
  TempDir dir;
  Mapping m(8 * Pg());
  const std::string path = dir.File("bad.img");
  Region unaligned = MakeRegion(m.data() + 1, Pg());
  EXPECT_EQ(SnapshotFull({unaligned}, path).status().code(), Code::kInvalidArgument);
  Region a = MakeRegion(m.data(), 4 * Pg()), b = MakeRegion(m.page(2), 4 * Pg());
  EXPECT_EQ(SnapshotFull({a, b}, path).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SnapshotFull({}, path).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SnapshotIncremental({{m.addr(), m.addr() + 5}}, {MakeRegion(m.data(), m.size())},
                                dir.File("p.img"), path)
                .status()
                .code(),
            Code::kInvalidArgument);
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}

// A chain of 12 layers built by SnapshotChain, each holding exactly the
// pages written (or dropped) since its parent; each truncated chain restores
// the memory of its step.
TEST(SnapshotChainTest, TwelveLayersEachHoldOnlyWrittenPages) {
  TempDir dir;
  const size_t pages = 512;
  Mapping m(pages * Pg());
  PageMixer mix(2024);
  for (size_t i = 0; i < pages; ++i) {
    if (i % 5 != 0) mix.WritePage(m.page(i));
  }
  const std::vector<Region> regions = {MakeRegion(m.data(), m.size())};
  Result<std::unique_ptr<SnapshotChain>> chain = SnapshotChain::Create(regions);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  std::vector<std::string> paths = {dir.File("base.img")};
  Result<SnapshotStats> bs = (*chain)->Base(paths[0]);
  ASSERT_TRUE(bs.ok()) << bs.status().ToString();
  std::vector<std::vector<char>> states = {Copy(m.data(), m.size())};
  std::vector<std::set<uint64_t>> written_sets = {{}};

  for (int step = 1; step <= 12; ++step) {
    std::set<uint64_t> written = mix.Pick(pages, 5 + mix.Next(40));
    for (uint64_t i : written) mix.WritePage(m.page(i));
    // Drop a few pages (some written this step, some not).
    std::set<uint64_t> dropped = mix.Pick(pages, 1 + mix.Next(6));
    for (uint64_t i : dropped) ASSERT_EQ(0, madvise(m.page(i), Pg(), MADV_DONTNEED));
    written.insert(dropped.begin(), dropped.end());

    paths.push_back(dir.File("layer" + std::to_string(step) + ".img"));
    Result<SnapshotStats> ls = (*chain)->Layer(paths.back());
    ASSERT_TRUE(ls.ok()) << ls.status().ToString();
    EXPECT_EQ(ls->image.pages, written.size()) << "step " << step;
    EXPECT_EQ(ls->pages_read + ls->pages_unpopulated, written.size()) << "step " << step;
    states.push_back(Copy(m.data(), m.size()));
    written_sets.push_back(written);
  }
  EXPECT_EQ((*chain)->layers(), 12);
  EXPECT_EQ((*chain)->head(), paths.back());

  for (size_t k = 0; k < paths.size(); ++k) {
    SCOPED_TRACE("chain truncated at layer " + std::to_string(k));
    // The top layer holds exactly the written pages.
    Result<std::unique_ptr<Image>> img = Image::Open(paths[k]);
    ASSERT_TRUE(img.ok()) << img.status().ToString();
    EXPECT_EQ((*img)->layers().size(), k + 1);
    if (k > 0) {
      std::vector<std::pair<uint64_t, uint64_t>> runs;
      ASSERT_TRUE((*img)->TopLayerRuns(0, &runs).ok());
      std::set<uint64_t> in_layer;
      for (auto [off, len] : runs) {
        for (uint64_t o = off; o < off + len; o += Pg()) in_layer.insert(o / Pg());
      }
      EXPECT_EQ(in_layer, written_sets[k]);
    }
    ExpectRestores(paths[k], {states[k]});
  }
}

TEST(SnapshotChainTest, DroppedPagesComeBackAsZeros) {
  TempDir dir;
  const size_t pages = 64;
  Mapping m(pages * Pg());
  PageMixer mix(5);
  for (size_t i = 0; i < pages; ++i) mix.WritePage(m.page(i), 0, 0);  // all random
  Result<std::unique_ptr<SnapshotChain>> chain =
      SnapshotChain::Create({MakeRegion(m.data(), m.size())});
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  ASSERT_TRUE((*chain)->Base(dir.File("b.img")).ok());
  ASSERT_EQ(0, madvise(m.page(10), 8 * Pg(), MADV_DONTNEED));
  Result<SnapshotStats> ls = (*chain)->Layer(dir.File("l.img"));
  ASSERT_TRUE(ls.ok()) << ls.status().ToString();
  EXPECT_EQ(ls->image.pages, 8u);
  EXPECT_EQ(ls->pages_read + ls->pages_unpopulated, 8u);
  EXPECT_EQ(ls->image.zero_pages, 8u);  // recorded as zero, overriding the base
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("l.img"));
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  const char* r = (*mem)->regions()[0].data;
  for (size_t i = 0; i < pages; ++i) {
    if (i >= 10 && i < 18) {
      EXPECT_FALSE(Resident(r + i * Pg())) << i;
      EXPECT_TRUE(std::all_of(r + i * Pg(), r + (i + 1) * Pg(), [](char c) { return c == 0; }));
    } else {
      EXPECT_EQ(0, std::memcmp(r + i * Pg(), m.page(i), Pg())) << i;
    }
  }
}

// A layer that fails to write (disk full) loses nothing: its pages go into
// the next layer, and the chain's head stays where it was.
TEST(SnapshotChainTest, FailedLayerKeepsItsPagesForTheNext) {
  TempDir dir;
  const size_t pages = 128;
  Mapping m(pages * Pg());
  PageMixer mix(17);
  for (size_t i = 0; i < pages; ++i) mix.WritePage(m.page(i));
  FaultEnv fenv;
  SnapshotChainOptions co;
  co.snapshot.compression = Compression::kNone;
  Result<std::unique_ptr<SnapshotChain>> chain =
      CreateSnapshotChain({MakeRegion(m.data(), m.size())}, co, &fenv);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  ASSERT_TRUE((*chain)->Base(dir.File("b.img")).ok());
  std::set<uint64_t> first = mix.Pick(pages, 10);
  for (uint64_t i : first) mix.FillRandom(m.page(i));
  fenv.Inject(Op::kPwrite, {ENOSPC, 0, 0, -1});
  Result<SnapshotStats> bad = (*chain)->Layer(dir.File("l1.img"));
  EXPECT_EQ(bad.status().code(), Code::kNoSpace) << bad.status().ToString();
  EXPECT_NE(access(dir.File("l1.img").c_str(), F_OK), 0);
  EXPECT_EQ((*chain)->head(), dir.File("b.img"));
  fenv.Clear();
  std::set<uint64_t> second = mix.Pick(pages, 10);
  for (uint64_t i : second) mix.FillRandom(m.page(i));
  Result<SnapshotStats> ok = (*chain)->Layer(dir.File("l2.img"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  std::set<uint64_t> both = first;
  both.insert(second.begin(), second.end());
  EXPECT_EQ(ok->image.pages, both.size());
  EXPECT_EQ((*chain)->layers(), 1);
  ExpectRestores(dir.File("l2.img"), {Copy(m.data(), m.size())});
}

TEST(SnapshotChainTest, LayerWithoutBaseAndRegionMismatch) {
  TempDir dir;
  Mapping m(16 * Pg()), other(16 * Pg());
  Result<std::unique_ptr<SnapshotChain>> chain =
      SnapshotChain::Create({MakeRegion(m.data(), m.size())});
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  EXPECT_EQ((*chain)->Layer(dir.File("l.img")).status().code(), Code::kFailedPrecondition);
  ASSERT_TRUE((*chain)->Base(dir.File("b.img")).ok());
  // A layer over a parent with different regions is refused.
  Result<SnapshotStats> bad = SnapshotIncremental({{other.addr(), other.addr() + Pg()}},
                                                  {MakeRegion(other.data(), other.size())},
                                                  dir.File("b.img"), dir.File("x.img"));
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument) << bad.status().ToString();
  EXPECT_NE(access(dir.File("x.img").c_str(), F_OK), 0);
}

TEST(SnapshotIncrementalTest, IgnoresRangesOutsideRegionsAndMergesOverlaps) {
  TempDir dir;
  Mapping m(32 * Pg());
  PageMixer mix(9);
  for (size_t i = 0; i < 32; ++i) mix.WritePage(m.page(i), 0, 0);
  // The region is pages [8, 24) of the mapping.
  const std::vector<Region> regions = {MakeRegion(m.page(8), 16 * Pg())};
  ASSERT_TRUE(SnapshotFull(regions, dir.File("b.img")).ok());
  mix.FillRandom(m.page(9));
  mix.FillRandom(m.page(10));
  const std::vector<PageRange> written = {{m.addr() + 9 * Pg(), m.addr() + 11 * Pg()},
                                          {m.addr() + 10 * Pg(), m.addr() + 11 * Pg()},
                                          {m.addr(), m.addr() + 2 * Pg()},  // outside
                                          {m.addr() + 30 * Pg(), m.addr() + 32 * Pg()}};
  Result<SnapshotStats> st =
      SnapshotIncremental(written, regions, dir.File("b.img"), dir.File("l.img"));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->image.pages, 2u);
  ExpectRestores(dir.File("l.img"), {Copy(m.page(8), 16 * Pg())});
}

TEST(RegionFromMapsTest, DescribesAnonymousSharedAndHoles) {
  Mapping anon(4 * Pg()), shm(4 * Pg(), MemKind::kMemfdShared);
  Result<Region> a = RegionFromMaps(anon.data(), anon.size());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->kind, RegionKind::kAnonymous);
  EXPECT_EQ(a->prot, static_cast<uint32_t>(PROT_READ | PROT_WRITE));
  EXPECT_EQ(a->address, anon.addr());
  Result<Region> s = RegionFromMaps(shm.data(), shm.size(), "mine");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->kind, RegionKind::kShared);
  EXPECT_EQ(s->name, "mine");
  ASSERT_EQ(0, mprotect(anon.page(1), Pg(), PROT_READ));
  Result<Region> mixed = RegionFromMaps(anon.data(), anon.size());
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->prot, static_cast<uint32_t>(PROT_READ | PROT_WRITE));
  ASSERT_EQ(0, munmap(anon.page(2), Pg()));
  Result<Region> hole = RegionFromMaps(anon.data(), anon.size());
  EXPECT_EQ(hole.status().code(), Code::kNotFound);
  char hole_addr[32];
  std::snprintf(hole_addr, sizeof(hole_addr), "0x%llx",
                static_cast<unsigned long long>(anon.addr() + 2 * Pg()));
  EXPECT_NE(hole.status().message().find(hole_addr), std::string::npos) << hole.status().ToString();
  EXPECT_EQ(RegionFromMaps(anon.data(), 100).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace pagewise::testing
