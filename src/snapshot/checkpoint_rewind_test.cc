// Checkpoint::Rewind's fast path (uffd-wp-async: find written pages without
// re-arming, copy back, re-arm exactly those): failures at each step are
// completed by the next Rewind, and memory mapped again over a region is
// refused without being written.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/checkpoint.h"
#include "pagewise/snapshot.h"
#include "snapshot/snapshot_env.h"
#include "snapshot/snapshot_test_util.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::testing {
namespace {

bool Same(const char* a, const char* b, size_t len) { return std::memcmp(a, b, len) == 0; }

struct Fixture {
  static constexpr size_t kPages = 64;
  Mapping m{kPages * Pg()};
  PageMixer mix{91};
  std::vector<char> ref;
  FaultEnv fenv;
  std::unique_ptr<Checkpoint> cp;

  void Create() {
    for (size_t i = 0; i < kPages; ++i) {
      if (i % 8 != 3) mix.FillRandom(m.page(i));  // some pages zero at the checkpoint
    }
    ref.assign(m.data(), m.data() + m.size());
    CheckpointOptions co;
    co.backend = TrackBackend::kUffdWpAsync;
    Result<std::unique_ptr<Checkpoint>> c =
        CreateCheckpoint({MakeRegion(m.data(), m.size())}, co, &fenv);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    cp = std::move(c).value();
  }
  void Dirty() {
    for (size_t i = 0; i < kPages; i += 5) mix.FillRandom(m.page(i));
  }
  // A good rewind after a failed one: exact memory, and then nothing left.
  void ExpectCompleted() {
    fenv.Clear();
    Result<RewindStats> good = cp->Rewind();
    ASSERT_TRUE(good.ok()) << good.status().ToString();
    EXPECT_TRUE(Same(m.data(), ref.data(), m.size()));
    Result<RewindStats> idle = cp->Rewind();
    ASSERT_TRUE(idle.ok()) << idle.status().ToString();
    EXPECT_EQ(idle->pages_restored, 0u) << "every page the rewinds wrote was re-armed";
  }
};

TEST(CheckpointFastRewind, ScanFailureLosesNothing) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.Create());
  f.Dirty();
  f.fenv.Inject(Op::kPagemapScan, {EIO, 0, 1, 1});  // the scan after the registration check
  Result<RewindStats> bad = f.cp->Rewind();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(f.fenv.Fired(Op::kPagemapScan), 1);
  EXPECT_FALSE(Same(f.m.data(), f.ref.data(), f.m.size()));
  f.ExpectCompleted();
}

// The re-arm fails whichever way it takes (per-range write-protect or one
// scan with WP_MATCHING): the next Rewind still finds what was left.
TEST(CheckpointFastRewind, RearmFailureIsCompletedByTheNext) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.Create());
  f.Dirty();
  f.fenv.Inject(Op::kUffdWriteProtect, {EIO, 0, 0, -1});
  f.fenv.Inject(Op::kPagemapScan, {EIO, 0, 2, -1});  // after check + scan: the re-arm
  Result<RewindStats> bad = f.cp->Rewind();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("re-arming"), std::string::npos) << bad.status().ToString();
  EXPECT_TRUE(Same(f.m.data(), f.ref.data(), f.m.size())) << "pages were put back";
  f.Dirty();  // and the program ran again before the next rewind
  f.ExpectCompleted();
}

TEST(CheckpointFastRewind, MadviseFailureIsCompletedByTheNext) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.Create());
  for (size_t i = 3; i < Fixture::kPages; i += 8) f.mix.FillRandom(f.m.page(i));  // zero ones
  f.fenv.Inject(Op::kMadvise, {EIO, 0, 1, 1});
  Result<RewindStats> bad = f.cp->Rewind();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Rewind() again"), std::string::npos)
      << bad.status().ToString();
  f.ExpectCompleted();
}

// Memory mapped again over part of a region is not the checkpointed memory:
// Rewind refuses (kFailedPrecondition) and writes nothing into it.
TEST(CheckpointFastRewind, MemoryMappedAgainIsRefusedUntouched) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.Create());
  f.Dirty();
  void* again = mmap(f.m.page(16), 8 * Pg(), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(again, f.m.page(16));
  ASSERT_EQ(madvise(again, 8 * Pg(), MADV_NOHUGEPAGE), 0);  // a separate VMA
  std::memset(again, 0x5a, 8 * Pg());
  Result<RewindStats> r = f.cp->Rewind();
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition) << r.status().ToString();
  const std::vector<char> mark(8 * Pg(), 0x5a);
  EXPECT_TRUE(Same(f.m.page(16), mark.data(), mark.size()));
}

}  // namespace
}  // namespace pagewise::testing
