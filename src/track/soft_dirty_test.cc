// The soft-dirty backend's logic, driven through an Env that plays the
// kernel's soft-dirty bits, so it is tested on every kernel, with or
// without CONFIG_MEM_SOFT_DIRTY. The real bits are tested where the probe
// finds them, and the refusal where it does not (tracker_create_test.cc).
#include <sys/mman.h>

#include <cstring>
#include <mutex>
#include <set>

#include "testing/fault_env.h"
#include "testing/test_util.h"
#include "track/track_internal.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

class SoftDirtyEnv : public FaultEnv {
 public:
  void MarkWritten(const void* page) {
    std::lock_guard<std::mutex> lock(mu_);
    dirty_.insert(reinterpret_cast<uint64_t>(page) / Pg());
  }
  int clears() const {
    std::lock_guard<std::mutex> lock(mu_);
    return clears_;
  }

  Result<int> OpenPagemap(pid_t pid) override {
    Result<int> fd = FaultEnv::OpenPagemap(pid);
    if (fd.ok()) pagemap_fd_ = *fd;
    return fd;
  }
  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    Result<int> fd =
        FaultEnv::Open(path == "/proc/self/clear_refs" ? "/dev/null" : path, flags, mode);
    if (fd.ok() && path == "/proc/self/clear_refs") clear_fd_ = *fd;
    return fd;
  }
  Result<size_t> Pread(int fd, void* buf, size_t len, off_t off) override {
    // The real read first, so that injected faults fire; then the fake bits.
    Result<size_t> r = FaultEnv::Pread(fd, buf, len, off);
    if (fd != pagemap_fd_ || !r.ok()) return r;
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t* e = static_cast<uint64_t*>(buf);
    for (size_t i = 0; i < len / 8; ++i) {
      const uint64_t pfn_index = static_cast<uint64_t>(off) / 8 + i;
      e[i] = dirty_.count(pfn_index) ? (1ULL << 55) | (1ULL << 63) : (1ULL << 63);
    }
    return len;
  }
  Result<size_t> Pwrite(int fd, const void* buf, size_t len, off_t off) override {
    if (fd != clear_fd_) return FaultEnv::Pwrite(fd, buf, len, off);
    std::lock_guard<std::mutex> lock(mu_);
    if (len == 1 && std::memcmp(buf, "4", 1) == 0) {
      dirty_.clear();
      clears_++;
    }
    return len;
  }

 private:
  mutable std::mutex mu_;
  std::set<uint64_t> dirty_;
  int clears_ = 0;
  int pagemap_fd_ = -1;
  int clear_fd_ = -1;
};

TEST(SoftDirty, ReportsBitsThenClearsThem) {
  SoftDirtyEnv env;
  Result<std::unique_ptr<Tracker>> t = track_internal::NewSoftDirtyTracker(&env);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ((*t)->backend(), TrackBackend::kSoftDirty);
  Mapping a(16 * Pg()), b(16 * Pg());
  env.MarkWritten(a.page(0));  // before Track: cleared by Track
  ASSERT_TRUE((*t)->Track(a.data(), a.size()).ok());
  EXPECT_EQ(env.clears(), 1);
  EXPECT_TRUE(CollectPages(t->get(), a.data(), 16).empty());
  env.MarkWritten(a.page(3));
  env.MarkWritten(a.page(4));
  EXPECT_EQ(CollectPages(t->get(), a.data(), 16), (std::set<size_t>{3, 4}));
  EXPECT_TRUE(CollectPages(t->get(), a.data(), 16).empty());

  // Tracking a second range clears every bit in the process: what the first
  // range had must not be lost.
  env.MarkWritten(a.page(9));
  ASSERT_TRUE((*t)->Track(b.data(), b.size()).ok());
  env.MarkWritten(b.page(1));
  std::vector<PageRange> outside;
  EXPECT_EQ(CollectPages(t->get(), a.data(), 16, &outside), (std::set<size_t>{9}));
  EXPECT_EQ(outside, (std::vector<PageRange>{{b.addr() + Pg(), b.addr() + 2 * Pg()}}));

  // madvise(MADV_DONTNEED) through the interposer reports the dropped pages.
  ASSERT_EQ(madvise(a.page(12), Pg(), MADV_DONTNEED), 0);
  EXPECT_EQ(CollectPages(t->get(), a.data(), 16), (std::set<size_t>{12}));
  ASSERT_TRUE((*t)->Untrack(b.data(), b.size()).ok());
  EXPECT_EQ((*t)->tracked(), (std::vector<PageRange>{{a.addr(), a.addr() + a.size()}}));
}

TEST(SoftDirty, ReadFailureClearsNothing) {
  SoftDirtyEnv env;
  Result<std::unique_ptr<Tracker>> t = track_internal::NewSoftDirtyTracker(&env);
  ASSERT_TRUE(t.ok());
  Mapping a(8 * Pg());
  ASSERT_TRUE((*t)->Track(a.data(), a.size()).ok());
  env.MarkWritten(a.page(2));
  env.Inject(Op::kPread, {EIO});
  std::vector<PageRange> w;
  EXPECT_FALSE((*t)->Collect(&w).ok());
  env.Clear();
  EXPECT_EQ(CollectPages(t->get(), a.data(), 8), (std::set<size_t>{2}));
}

}  // namespace
}  // namespace pagewise::testing
