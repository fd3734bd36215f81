// Tracker and fork(2): the child is not tracked and runs unhindered, the
// parent's tracking is unaffected. Also the mprotect backend's default-action
// chaining, which needs a process that may die.
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "pagewise/tracker.h"
#include "testing/test_util.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

void Poke(char* p, char v) { *static_cast<volatile char*>(p) = v; }
char Peek(const char* p) { return *static_cast<const volatile char*>(p); }

// Waits for `pid`, failing (and killing it) if it has not reported on
// `report_fd` within a generous bound: a child stuck on a write fault that
// nobody serves must fail the test, not hang it.
int WaitChild(pid_t pid, int report_fd, char* byte) {
  struct pollfd pfd = {report_fd, POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, 20000);
  } while (ready < 0 && errno == EINTR);
  *byte = 0;
  if (ready <= 0 || read(report_fd, byte, 1) != 1) {
    kill(pid, SIGKILL);
    *byte = '?';
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

class TrackForkTest : public ::testing::TestWithParam<TrackBackend> {};

TEST_P(TrackForkTest, ChildIsNotTrackedAndParentIsUnaffected) {
  std::unique_ptr<Tracker> t = MakeTracker(GetParam());
  ASSERT_NE(t, nullptr);
  constexpr size_t kPages = 64;
  Mapping m(kPages * Pg());
  for (size_t i = 0; i < kPages; ++i) Poke(m.page(i), 'p');
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  Poke(m.page(1), 'a');  // before the fork: reported to the parent

  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: only memory accesses, write and _exit.
    close(fds[0]);
    bool ok = true;
    for (size_t i = 2; i <= 10; ++i) {
      Poke(m.page(i), 'c');
      ok = ok && Peek(m.page(i)) == 'c';
    }
    std::vector<PageRange> w;
    ok = ok && t->Collect(&w).code() == Code::kFailedPrecondition && w.empty();
    char byte = ok ? 'k' : 'x';
    ssize_t n = write(fds[1], &byte, 1);
    _exit(n == 1 && ok ? 0 : 1);
  }
  close(fds[1]);
  Poke(m.page(20), 'b');  // while the child may still run
  char byte;
  int status = WaitChild(pid, fds[0], &byte);
  close(fds[0]);
  ASSERT_EQ(byte, 'k') << "child could not write its copy (stuck or failed)";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  for (size_t i = 2; i <= 10; ++i)
    EXPECT_EQ(Peek(m.page(i)), 'p') << "child write leaked into parent";
  Poke(m.page(30), 'd');  // after the child is gone
  EXPECT_EQ(CollectPages(t.get(), m.data(), kPages), (std::set<size_t>{1, 20, 30}));
  Poke(m.page(2), 'e');  // the parent's COW-shared page, written after the fork
  EXPECT_EQ(CollectPages(t.get(), m.data(), kPages), (std::set<size_t>{2}));
}

INSTANTIATE_TEST_SUITE_P(Backends, TrackForkTest,
                         ::testing::Values(TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
                                           TrackBackend::kMprotect),
                         BackendParamName);

// With SIG_DFL as the previous SIGSEGV disposition, a genuine fault outside
// tracked memory must still kill the process with SIGSEGV, and a write to
// tracked memory just before must not.
TEST(MprotectChainDefault, GenuineFaultStillKillsWithSigsegv) {
  struct sigaction dfl, old;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ASSERT_EQ(sigaction(SIGSEGV, &dfl, &old), 0);  // e.g. ASan's handler, restored below
  {
    std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
    ASSERT_NE(t, nullptr);
    Mapping tracked(4 * Pg()), guard(Pg());
    ASSERT_TRUE(t->Track(tracked.data(), tracked.size()).ok());
    ASSERT_EQ(mprotect(guard.data(), Pg(), PROT_READ), 0);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      Poke(tracked.page(1), 1);  // served by the tracker
      char byte = 'k';
      if (write(fds[1], &byte, 1) != 1) _exit(3);
      Poke(guard.data(), 1);  // genuine: must die here
      _exit(0);
    }
    close(fds[1]);
    char byte;
    int status = WaitChild(pid, fds[0], &byte);
    close(fds[0]);
    EXPECT_EQ(byte, 'k') << "the tracked write in the child failed";
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << "status " << status;
    EXPECT_TRUE(CollectPages(t.get(), tracked.data(), 4).empty()) << "child write reached parent";
  }
  sigaction(SIGSEGV, &old, nullptr);
}

}  // namespace
}  // namespace pagewise::testing
