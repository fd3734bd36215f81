// Eager restore: placements, corruption, and what memory holds after errors.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/snapshot.h"
#include "snapshot/snapshot_test_util.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::testing {
namespace {

// A test-owned anonymous mapping (so the test can unmap it on purpose).
char* MapAnon(size_t len) {
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(p, MAP_FAILED);
  madvise(p, len, MADV_NOHUGEPAGE);
  return static_cast<char*>(p);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Fills `pages` pages: even pages random, odd pages zero.
std::vector<char> FillHalfZero(char* p, size_t pages, uint64_t seed) {
  PageMixer mix(seed);
  for (size_t i = 0; i < pages; ++i) {
    if (i % 2 == 0) {
      mix.FillRandom(p + i * Pg());
    } else {
      std::memset(p + i * Pg(), 0, Pg());
    }
  }
  return std::vector<char>(p, p + pages * Pg());
}

TEST(RestoreTest, OriginalAddressesWhenFree) {
  TempDir dir;
  const size_t len = 32 * Pg();
  char* p = MapAnon(len);
  const std::vector<char> want = FillHalfZero(p, 32, 1);
  ASSERT_TRUE(SnapshotFull({MakeRegion(p, len)}, dir.File("a.img")).ok());
  ASSERT_EQ(0, munmap(p, len));
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kOriginal;
  {
    Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("a.img"), ro);
    ASSERT_TRUE(mem.ok()) << mem.status().ToString();
    ASSERT_EQ((*mem)->regions()[0].data, p);
    EXPECT_TRUE((*mem)->regions()[0].owned);
    EXPECT_FALSE(Resident(p + Pg()));  // a zero page: left unpopulated
    EXPECT_EQ(0, std::memcmp(p, want.data(), len));
  }
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(p), len));  // owned: unmapped
}

TEST(RestoreTest, OriginalAddressTakenFailsAndLeavesNothing) {
  TempDir dir;
  const size_t len = 8 * Pg();
  char* a = MapAnon(len);
  char* b = MapAnon(len);
  FillHalfZero(a, 8, 2);
  FillHalfZero(b, 8, 3);
  ASSERT_TRUE(SnapshotFull({MakeRegion(a, len), MakeRegion(b, len)}, dir.File("ab.img")).ok());
  ASSERT_EQ(0, munmap(a, len));  // a is free, b is still mapped
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kOriginal;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("ab.img"), ro);
  EXPECT_EQ(mem.status().code(), Code::kAlreadyExists) << mem.status().ToString();
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(a), len));  // region 0 undone
  munmap(b, len);
}

TEST(RestoreTest, ReplaceExistingSwapsTheMappingAtomically) {
  TempDir dir;
  const size_t len = 16 * Pg();
  Mapping shm(len, MemKind::kMemfdShared);
  const std::vector<char> want = FillHalfZero(shm.data(), 16, 4);
  ASSERT_TRUE(
      SnapshotFull({MakeRegion(shm.data(), len, RegionKind::kShared)}, dir.File("s.img")).ok());
  std::memset(shm.data(), 0x5a, len);
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kReplaceExisting;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("s.img"), ro);
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  EXPECT_EQ((*mem)->regions()[0].data, shm.data());
  EXPECT_FALSE((*mem)->regions()[0].owned);
  EXPECT_EQ(0, std::memcmp(shm.data(), want.data(), len));
  Result<Region> now = RegionFromMaps(shm.data(), len);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->kind, RegionKind::kAnonymous);  // replaced, not written through

  ASSERT_EQ(0, munmap(shm.data(), len));
  Result<std::unique_ptr<RestoredMemory>> gone = RestoreEager(dir.File("s.img"), ro);
  EXPECT_EQ(gone.status().code(), Code::kFailedPrecondition) << gone.status().ToString();
  shm.Release();
}

TEST(RestoreTest, OverwriteInPlaceWritesThroughSharedAndDropsAnonZeros) {
  TempDir dir;
  const size_t len = 16 * Pg();
  Mapping shm(len, MemKind::kMemfdShared);
  Mapping anon(len);
  const std::vector<char> want_s = FillHalfZero(shm.data(), 16, 5);
  const std::vector<char> want_a = FillHalfZero(anon.data(), 16, 6);
  ASSERT_TRUE(
      SnapshotFull({MakeRegion(shm.data(), len, RegionKind::kShared), MakeRegion(anon.data(), len)},
                   dir.File("o.img"))
          .ok());
  std::memset(shm.data(), 0x11, len);
  std::memset(anon.data(), 0x22, len);
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kOverwriteInPlace;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("o.img"), ro);
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  EXPECT_FALSE(Resident(anon.page(1)));  // zero page dropped, not written
  EXPECT_EQ(0, std::memcmp(anon.data(), want_a.data(), len));
  EXPECT_EQ(0, std::memcmp(shm.data(), want_s.data(), len));
  // Written through to the memfd: a second mapping sees it.
  void* again = mmap(nullptr, len, PROT_READ, MAP_SHARED, shm.memfd(), 0);
  ASSERT_NE(again, MAP_FAILED);
  EXPECT_EQ(0, std::memcmp(again, want_s.data(), len));
  munmap(again, len);
}

TEST(RestoreTest, AppliesRecordedProtection) {
  TempDir dir;
  Mapping m(4 * Pg());
  FillHalfZero(m.data(), 4, 7);
  ASSERT_TRUE(SnapshotFull({MakeRegion(m.data(), m.size(), RegionKind::kAnonymous, PROT_READ)},
                           dir.File("r.img"))
                  .ok());
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(dir.File("r.img"));
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  Result<Region> info = RegionFromMaps((*mem)->regions()[0].data, m.size());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->prot, static_cast<uint32_t>(PROT_READ));
  EXPECT_EQ(0, std::memcmp((*mem)->regions()[0].data, m.data(), m.size()));
}

// Builds base + one layer (uncompressed, so a page's bytes can be found in
// the file) and corrupts one byte of a data page inside the layer.
struct CorruptChain {
  TempDir dir;
  size_t len = 16 * Pg();
  char* p = nullptr;
  std::vector<char> base_state;

  void Build() {
    p = MapAnon(len);
    base_state = FillHalfZero(p, 16, 8);
    SnapshotOptions so;
    so.compression = Compression::kNone;
    const std::vector<Region> regions = {MakeRegion(p, len)};
    ASSERT_TRUE(SnapshotFull(regions, dir.File("base.img"), so).ok());
    std::vector<char> marker(Pg());
    PageMixer(99).FillRandom(marker.data());
    std::memcpy(p + 3 * Pg(), marker.data(), Pg());
    ASSERT_TRUE(SnapshotIncremental({{reinterpret_cast<uint64_t>(p) + 3 * Pg(),
                                      reinterpret_cast<uint64_t>(p) + 4 * Pg()}},
                                    regions, dir.File("base.img"), dir.File("layer1.img"), so)
                    .ok());
    std::string file = ReadFile(dir.File("layer1.img"));
    const size_t at = file.find(std::string(marker.data(), Pg()));
    ASSERT_NE(at, std::string::npos) << "the page's bytes are not in the uncompressed layer";
    file[at + 100] ^= 0x40;
    WriteFile(dir.File("layer1.img"), file);
  }
};

TEST(RestoreTest, CorruptedLayerFailsClearlyAndLeavesNothing) {
  CorruptChain c;
  c.Build();
  if (::testing::Test::HasFatalFailure()) return;
  ASSERT_EQ(0, munmap(c.p, c.len));
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kOriginal;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(c.dir.File("layer1.img"), ro);
  ASSERT_FALSE(mem.ok());
  EXPECT_EQ(mem.status().code(), Code::kCorruption) << mem.status().ToString();
  EXPECT_NE(mem.status().message().find("layer1.img"), std::string::npos)
      << mem.status().ToString();
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(c.p), c.len));
  // The intact base still restores.
  Result<std::unique_ptr<RestoredMemory>> base = RestoreEager(c.dir.File("base.img"));
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  EXPECT_EQ(0, std::memcmp((*base)->regions()[0].data, c.base_state.data(), c.len));
}

TEST(RestoreTest, CorruptedLayerInPlaceLeavesMemoryUntouched) {
  CorruptChain c;
  c.Build();
  if (::testing::Test::HasFatalFailure()) return;
  std::memset(c.p, 0x77, c.len);
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kOverwriteInPlace;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(c.dir.File("layer1.img"), ro);
  EXPECT_EQ(mem.status().code(), Code::kCorruption) << mem.status().ToString();
  EXPECT_NE(mem.status().message().find("not touched"), std::string::npos);
  for (size_t i = 0; i < c.len; ++i) ASSERT_EQ(c.p[i], 0x77) << "byte " << i;
  munmap(c.p, c.len);
}

TEST(RestoreTest, InjectedFaultsLeaveNoMappingsAndNoFiles) {
  TempDir dir;
  const size_t len = 8 * Pg();
  char* a = MapAnon(len);
  char* b = MapAnon(len);
  FillHalfZero(a, 8, 10);
  FillHalfZero(b, 8, 11);
  const std::vector<Region> regions = {MakeRegion(a, len), MakeRegion(b, len)};

  FaultEnv fenv;
  fenv.Inject(Op::kPwrite, {ENOSPC, 0, 0, -1});
  SnapshotOptions so;
  so.compression = Compression::kNone;
  Result<SnapshotStats> st = SnapshotFull(regions, dir.File("full.img"), so, &fenv);
  EXPECT_EQ(st.status().code(), Code::kNoSpace) << st.status().ToString();
  EXPECT_NE(access(dir.File("full.img").c_str(), F_OK), 0);
  fenv.Clear();
  ASSERT_TRUE(SnapshotFull(regions, dir.File("full.img")).ok());
  ASSERT_EQ(0, munmap(a, len));
  ASSERT_EQ(0, munmap(b, len));

  // The second mapping fails: the first must be undone. (The image is
  // opened with the real Env so that only the restore's calls count.)
  Result<std::unique_ptr<Image>> plain = Image::Open(dir.File("full.img"));
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  fenv.Inject(Op::kMmap, {ENOMEM, 0, 1, 1});
  EagerRestoreOptions ro;
  ro.placement = RestorePlacement::kOriginal;
  Result<std::unique_ptr<RestoredMemory>> mem = RestoreEager(**plain, ro, &fenv);
  EXPECT_EQ(mem.status().code(), Code::kResourceExhausted) << mem.status().ToString();
  EXPECT_EQ(fenv.Fired(Op::kMmap), 1);
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(a), len));
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(b), len));

  // Reads failing after the image opened: an I/O error, nothing left mapped.
  fenv.Clear();
  Result<std::unique_ptr<Image>> img = OpenImage(dir.File("full.img"), ImageOpenOptions{}, &fenv);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  fenv.Inject(Op::kPread, {EIO, 0, 0, -1});
  mem = RestoreEager(**img, ro, &fenv);
  EXPECT_EQ(mem.status().code(), Code::kIoError) << mem.status().ToString();
  EXPECT_GT(fenv.Fired(Op::kPread), 0);
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(a), len));
  EXPECT_TRUE(AddressFree(reinterpret_cast<uint64_t>(b), len));
}

}  // namespace
}  // namespace pagewise::testing
