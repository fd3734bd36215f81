// mprotect backend specifics: chaining to the program's SIGSEGV handler,
// the program's own mprotect calls on tracked pages, and VMA merging.
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>

#include "pagewise/tracker.h"
#include "testing/test_util.h"
#include "track/track_internal.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

void Poke(char* p, char v) { *static_cast<volatile char*>(p) = v; }

std::atomic<int> g_calls{0};
std::atomic<uint64_t> g_last_addr{0};
std::atomic<char*> g_fix_page{nullptr};

// A program's handler: records the fault and makes the page writable, as a
// garbage collector or a guard-page user would.
void ProgramSiginfoHandler(int, siginfo_t* info, void*) {
  g_calls.fetch_add(1);
  g_last_addr = reinterpret_cast<uint64_t>(info->si_addr);
  const uint64_t page = g_last_addr.load() & ~(static_cast<uint64_t>(getpagesize()) - 1);
  mprotect(reinterpret_cast<void*>(page), getpagesize(), PROT_READ | PROT_WRITE);
}

void ProgramPlainHandler(int) {
  g_calls.fetch_add(1);
  mprotect(g_fix_page.load(), getpagesize(), PROT_READ | PROT_WRITE);
}

// Installs a handler for the test's duration, restoring the previous one.
class ScopedSegvHandler {
 public:
  explicit ScopedSegvHandler(bool siginfo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    if (siginfo) {
      sa.sa_sigaction = ProgramSiginfoHandler;
      sa.sa_flags = SA_SIGINFO;
    } else {
      sa.sa_handler = ProgramPlainHandler;
    }
    sigaction(SIGSEGV, &sa, &old_);
    g_calls = 0;
  }
  ~ScopedSegvHandler() { sigaction(SIGSEGV, &old_, nullptr); }

 private:
  struct sigaction old_;
};

bool CurrentHandlerIs(void (*fn)(int, siginfo_t*, void*)) {
  struct sigaction cur;
  sigaction(SIGSEGV, nullptr, &cur);
  return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == fn;
}

TEST(MprotectChain, ProgramSiginfoHandlerStillGetsFaultsOutsideTrackedMemory) {
  ScopedSegvHandler program(/*siginfo=*/true);
  {
    std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
    ASSERT_NE(t, nullptr);
    Mapping tracked(8 * Pg()), guard(Pg());
    ASSERT_TRUE(t->Track(tracked.data(), tracked.size()).ok());
    ASSERT_EQ(mprotect(guard.data(), Pg(), PROT_READ), 0);

    Poke(guard.data(), 1);  // not ours: the program's handler unprotects it
    EXPECT_EQ(g_calls.load(), 1);
    EXPECT_EQ(g_last_addr.load(), guard.addr());

    Poke(tracked.page(2), 1);  // ours: the program's handler never hears of it
    EXPECT_EQ(g_calls.load(), 1);

    // The program makes a tracked page read-only: writing it is the
    // program's own fault, passed on; its handler's mprotect(RW) makes the
    // write go through, and the write is still tracked.
    ASSERT_EQ(mprotect(tracked.page(5), Pg(), PROT_READ), 0);
    Poke(tracked.page(5), 2);
    EXPECT_EQ(g_calls.load(), 2);
    EXPECT_EQ(g_last_addr.load(), tracked.addr() + 5 * Pg());
    EXPECT_EQ(CollectPages(t.get(), tracked.data(), 8), (std::set<size_t>{2, 5}));
    EXPECT_FALSE(CurrentHandlerIs(ProgramSiginfoHandler));
  }
  EXPECT_TRUE(CurrentHandlerIs(ProgramSiginfoHandler)) << "previous handler not restored";
}

TEST(MprotectChain, ProgramPlainHandlerIsChainedToo) {
  ScopedSegvHandler program(/*siginfo=*/false);
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
  ASSERT_NE(t, nullptr);
  Mapping tracked(4 * Pg()), guard(Pg());
  ASSERT_TRUE(t->Track(tracked.data(), tracked.size()).ok());
  ASSERT_EQ(mprotect(guard.data(), Pg(), PROT_READ), 0);
  g_fix_page = guard.data();
  Poke(guard.data(), 1);
  EXPECT_EQ(g_calls.load(), 1);
  Poke(tracked.page(1), 1);
  EXPECT_EQ(g_calls.load(), 1);
  EXPECT_EQ(CollectPages(t.get(), tracked.data(), 4), (std::set<size_t>{1}));
}

TEST(MprotectProgramCalls, ProtNoneStaysNoneAcrossCollects) {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
  ASSERT_NE(t, nullptr);
  Mapping m(8 * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  ASSERT_EQ(mprotect(m.page(3), 2 * Pg(), PROT_NONE), 0);
  (void)CollectPages(t.get(), m.data(), 8);
  Result<std::vector<track_internal::Vma>> maps = track_internal::ReadMaps(Env::Default());
  ASSERT_TRUE(maps.ok());
  bool found = false;
  for (const auto& v : *maps) {
    if (v.start <= m.addr() + 3 * Pg() && m.addr() + 3 * Pg() < v.end) {
      EXPECT_EQ(v.prot, 0) << "collect re-protected a PROT_NONE page as readable";
      found = true;
    }
  }
  EXPECT_TRUE(found);
  ASSERT_EQ(mprotect(m.page(3), 2 * Pg(), PROT_READ | PROT_WRITE), 0);
  Poke(m.page(4), 1);  // writable again, and tracked
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{4}));
  // Untrack gives the program its protection back.
  ASSERT_EQ(mprotect(m.page(6), Pg(), PROT_READ), 0);
  ASSERT_TRUE(t->Untrack(m.data(), m.size()).ok());
  maps = track_internal::ReadMaps(Env::Default());
  ASSERT_TRUE(maps.ok());
  for (const auto& v : *maps) {
    if (v.end <= m.addr() || v.start >= m.addr() + m.size()) continue;
    const bool is6 = v.start <= m.addr() + 6 * Pg() && m.addr() + 6 * Pg() < v.end;
    EXPECT_EQ(v.prot, is6 ? PROT_READ : (PROT_READ | PROT_WRITE));
  }
}

TEST(MprotectVmas, CollectMergesTheVmasFaultsSplit) {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
  ASSERT_NE(t, nullptr);
  constexpr size_t kPages = 2048;
  Mapping m(kPages * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  auto vmas_in_range = [&] {
    Result<std::vector<track_internal::Vma>> maps = track_internal::ReadMaps(Env::Default());
    EXPECT_TRUE(maps.ok());
    size_t n = 0;
    for (const auto& v : *maps) n += v.start < m.addr() + m.size() && m.addr() < v.end;
    return n;
  };
  for (size_t i = 0; i < kPages; i += 2) Poke(m.page(i), 1);
  EXPECT_GT(vmas_in_range(), kPages / 2);  // each unprotected page is its own VMA
  EXPECT_EQ(CollectPages(t.get(), m.data(), kPages).size(), kPages / 2);
  EXPECT_EQ(vmas_in_range(), 1u);
  EXPECT_EQ(t->stats().faults_handled, kPages / 2);
}

}  // namespace
}  // namespace pagewise::testing
