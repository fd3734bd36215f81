// UffdLoop against the real kernel: faults served until Stop(), events of a
// batch dispatched before its faults, watched descriptors, wake-ups,
// timeouts, sources added beyond the capacity while dispatching, a FORK
// nobody takes, and stopping with or without draining what is pending.
#include "sys/uffd_loop.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "pagewise/probe.h"
#include "sys/uapi.h"
#include "sys/userfaultfd.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::sys {
namespace {

using ::pagewise::testing::FaultEnv;
using ::pagewise::testing::Mapping;

const size_t kPage = PageSize();

Userfaultfd OpenMissing(const Mapping& m, Env* env = Env::Default()) {
  Userfaultfd::Options o;
  o.env = env;
  Result<Userfaultfd> u = Userfaultfd::Open(o);
  EXPECT_TRUE(u.ok()) << u.status().ToString();
  if (!u.ok()) return Userfaultfd();
  EXPECT_TRUE(u->Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  return std::move(u).value();
}

std::unique_ptr<UffdLoop> MakeLoop(Env* env, UffdLoop::Options o = {}) {
  Result<std::unique_ptr<UffdLoop>> loop = UffdLoop::Create(env, o);
  EXPECT_TRUE(loop.ok()) << loop.status().ToString();
  return loop.ok() ? std::move(loop).value() : nullptr;
}

// Blocks (no timeout needed: the fault is certain) until `fd` is readable.
void WaitReadable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, -1), 1);
}

// Serves missing faults with zero pages and counts them per source.
struct ZeroServer : UffdHandler {
  std::vector<const Userfaultfd*> sources;  // by tag
  std::vector<int> faults;
  void OnPagefault(uint64_t tag, const UffdEvent& e) override {
    faults.resize(sources.size());
    faults[tag]++;
    const uint64_t page = e.address & ~(kPage - 1);
    EXPECT_TRUE(sources[tag]->Zeropage(page, kPage).ok());
  }
};

TEST(UffdLoop, ServesFaultsUntilStopped) {
  Mapping m(8 * kPage);
  Userfaultfd u = OpenMissing(m);
  auto loop = MakeLoop(Env::Default());
  ASSERT_NE(loop, nullptr);
  ASSERT_TRUE(loop->AddUffd(u.fd(), 0).ok());
  EXPECT_EQ(loop->sources(), 1u);
  ZeroServer h;
  h.sources = {&u};
  std::thread server([&] { EXPECT_TRUE(loop->Run(&h).ok()); });
  size_t nonzero = 0;
  for (size_t i = 0; i < 8; ++i) nonzero += m.page(i)[100] != 0;  // each read faults once
  loop->Stop();
  server.join();
  EXPECT_EQ(nonzero, 0u);
  ASSERT_EQ(h.faults.size(), 1u);
  EXPECT_EQ(h.faults[0], 8);
  EXPECT_TRUE(loop->stopping());
}

TEST(UffdLoop, EventsOfABatchAreDispatchedBeforeItsFaults) {
  Mapping m(2 * kPage);
  FaultEnv env;
  // The kernel returns the (real) fault; the filter appends a REMOVE and an
  // UNMAP behind it, the order in which the kernel hands them out when a
  // fault and events are pending together.
  env.SetReadFilter([&](UffdEvent* ev, size_t* n, size_t max) {
    if (*n != 1 || max < 3 || ev[0].kind != UffdEvent::Kind::kPagefault) return;
    ev[1] = UffdEvent{};
    ev[1].kind = UffdEvent::Kind::kRemove;
    ev[1].start = m.addr() + kPage;
    ev[1].end = m.addr() + 2 * kPage;
    ev[2] = ev[1];
    ev[2].kind = UffdEvent::Kind::kUnmap;
    *n = 3;
  });
  Userfaultfd u = OpenMissing(m, &env);
  auto loop = MakeLoop(&env);
  ASSERT_NE(loop, nullptr);
  ASSERT_TRUE(loop->AddUffd(u.fd(), 7).ok());
  struct Recorder : ZeroServer {
    std::vector<UffdEvent::Kind> order;
    std::vector<uint64_t> tags;
    void OnPagefault(uint64_t tag, const UffdEvent& e) override {
      order.push_back(e.kind);
      tags.push_back(tag);
      EXPECT_TRUE(sources[0]->Zeropage(e.address & ~(kPage - 1), kPage).ok());
    }
    void OnRemove(uint64_t, const UffdEvent& e) override { order.push_back(e.kind); }
    void OnUnmap(uint64_t, const UffdEvent& e) override { order.push_back(e.kind); }
    void AfterRead(uint64_t tag, size_t messages) override {
      EXPECT_EQ(tag, 7u);
      read += messages;
    }
    size_t read = 0;
  } h;
  h.sources = {&u};
  std::thread toucher([&] { EXPECT_EQ(m.page(0)[0], 0); });
  WaitReadable(u.fd());
  Result<bool> more = loop->RunOnce(&h);
  ASSERT_TRUE(more.ok()) << more.status().ToString();
  EXPECT_TRUE(*more);
  toucher.join();
  using K = UffdEvent::Kind;
  EXPECT_EQ(h.order, (std::vector<K>{K::kRemove, K::kUnmap, K::kPagefault}));
  EXPECT_EQ(h.tags, std::vector<uint64_t>{7});
  EXPECT_EQ(h.read, 3u);
}

TEST(UffdLoop, WatchedDescriptorsWakeUpsAndTimeouts) {
  auto loop = MakeLoop(Env::Default());
  ASSERT_NE(loop, nullptr);
  const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(efd, 0);
  ASSERT_TRUE(loop->Watch(efd).ok());
  struct H : UffdHandler {
    int efd = -1;
    int watched = 0, wakes = 0, idles = 0, polls = 0;
    void OnWatched(int fd, short revents) override {
      EXPECT_EQ(fd, efd);
      EXPECT_TRUE(revents & POLLIN);
      eventfd_t v;
      EXPECT_EQ(eventfd_read(fd, &v), 0);
      watched++;
    }
    void OnWake() override { wakes++; }
    void OnIdle() override { idles++; }
    bool BeforePoll(Duration* timeout) override {
      polls++;
      *timeout = std::chrono::milliseconds(1);  // nothing else is ever ready: idles
      return idles == 0;
    }
  } h;
  h.efd = efd;
  ASSERT_EQ(eventfd_write(efd, 1), 0);
  ASSERT_TRUE(loop->RunOnce(&h).ok());
  EXPECT_EQ(h.watched, 1);
  loop->Wake();
  ASSERT_TRUE(loop->RunOnce(&h).ok());
  EXPECT_EQ(h.wakes, 1);
  loop->Unwatch(efd);
  ASSERT_EQ(eventfd_write(efd, 1), 0);  // no longer watched: never reported
  EXPECT_TRUE(loop->Run(&h).ok());      // ends when BeforePoll says so, after one idle poll
  EXPECT_EQ(h.idles, 1);
  EXPECT_EQ(h.watched, 1);
  close(efd);
}

TEST(UffdLoop, SourcesAddedWhileDispatchingGrowTheStorageAndKeepTheirReadiness) {
  // Two sources, both with a fault pending before the iteration; the first
  // one's handler adds more sources than the capacity holds. The second
  // fault must still be read in the same iteration.
  Mapping a(kPage), b(kPage);
  Userfaultfd ua = OpenMissing(a), ub = OpenMissing(b);
  UffdLoop::Options o;
  o.capacity = 2;
  auto loop = MakeLoop(Env::Default(), o);
  ASSERT_NE(loop, nullptr);
  const std::vector<PageRange> before = loop->memory();
  ASSERT_TRUE(loop->AddUffd(ua.fd(), 0).ok());
  ASSERT_TRUE(loop->AddUffd(ub.fd(), 1).ok());
  std::vector<int> extra;
  struct H : ZeroServer {
    UffdLoop* loop = nullptr;
    std::vector<int>* extra = nullptr;
    void OnPagefault(uint64_t tag, const UffdEvent& e) override {
      if (tag == 0) {
        for (int i = 0; i < 40; ++i) {
          extra->push_back(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
          EXPECT_TRUE(loop->AddUffd(extra->back(), 100 + i).ok());
        }
        loop->RemoveUffd(100);  // removed during dispatch: skipped, compacted later
      }
      ZeroServer::OnPagefault(tag, e);
    }
  } h;
  h.sources = {&ua, &ub};
  h.loop = loop.get();
  h.extra = &extra;
  std::thread ta([&] { EXPECT_EQ(a.data()[1], 0); });
  std::thread tb([&] { EXPECT_EQ(b.data()[1], 0); });
  WaitReadable(ua.fd());
  WaitReadable(ub.fd());
  ASSERT_TRUE(loop->RunOnce(&h).ok());
  ta.join();
  tb.join();
  ASSERT_EQ(h.faults.size(), 2u);
  EXPECT_EQ(h.faults[0], 1);
  EXPECT_EQ(h.faults[1], 1);
  EXPECT_EQ(loop->sources(), 2u + 39u);
  EXPECT_NE(loop->memory()[0].start, before[0].start) << "the poll set grew into a new mapping";
  EXPECT_EQ(loop->memory()[1].start, before[1].start) << "the message buffer never moves";
  for (int fd : extra) close(fd);
}

TEST(UffdLoop, AForkNobodyTakesHasItsDescriptorClosed) {
  Mapping m(kPage);
  FaultEnv env;
  const int child = eventfd(0, EFD_CLOEXEC);  // stands in for the child's userfaultfd
  ASSERT_GE(child, 0);
  env.SetReadFilter([&](UffdEvent* ev, size_t* n, size_t max) {
    if (*n != 1 || max < 2) return;
    ev[1] = UffdEvent{};
    ev[1].kind = UffdEvent::Kind::kFork;
    ev[1].fork_fd = child;
    *n = 2;
  });
  Userfaultfd u = OpenMissing(m, &env);
  auto loop = MakeLoop(&env);
  ASSERT_NE(loop, nullptr);
  ASSERT_TRUE(loop->AddUffd(u.fd(), 0).ok());
  ZeroServer h;  // does not override OnFork
  h.sources = {&u};
  std::thread toucher([&] { EXPECT_EQ(m.data()[0], 0); });
  WaitReadable(u.fd());
  ASSERT_TRUE(loop->RunOnce(&h).ok());
  toucher.join();
  errno = 0;
  EXPECT_EQ(fcntl(child, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF) << "the dispatcher closes a FORK descriptor nobody took";
}

TEST(UffdLoop, StopDrainsPendingFaultsOnlyWhenAsked) {
  for (bool drain : {false, true}) {
    SCOPED_TRACE(drain ? "drain_on_stop" : "no drain");
    Mapping m(kPage);
    Userfaultfd u = OpenMissing(m);
    UffdLoop::Options o;
    o.drain_on_stop = drain;
    auto loop = MakeLoop(Env::Default(), o);
    ASSERT_NE(loop, nullptr);
    ASSERT_TRUE(loop->AddUffd(u.fd(), 0).ok());
    ZeroServer h;
    h.sources = {&u};
    std::thread toucher([&] { EXPECT_EQ(m.data()[0], 0); });
    WaitReadable(u.fd());
    loop->Stop();
    Result<bool> more = loop->RunOnce(&h);
    ASSERT_TRUE(more.ok());
    EXPECT_FALSE(*more);
    EXPECT_EQ(h.faults.empty() ? 0 : h.faults[0], drain ? 1 : 0);
    if (!drain) {
      // The fault is still queued: serve it with the free-standing drain.
      UffdEvent buf[4];
      Result<size_t> n = DrainUffd(Env::Default(), u.fd(), 0, &h, buf, 4);
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      EXPECT_EQ(*n, 1u);
    }
    toucher.join();
  }
}

TEST(UffdLoop, ReadErrorsGoToTheHandler) {
  Mapping m(kPage);
  FaultEnv env;
  Userfaultfd u = OpenMissing(m, &env);
  auto loop = MakeLoop(&env);
  ASSERT_NE(loop, nullptr);
  ASSERT_TRUE(loop->AddUffd(u.fd(), 3).ok());
  env.Inject(::pagewise::testing::Op::kUffdRead, {.error = EIO, .count = 1});
  struct H : ZeroServer {
    int errors = 0;
    void OnReadError(uint64_t tag, const Status& s) override {
      EXPECT_EQ(tag, 3u);
      EXPECT_EQ(s.code(), Code::kIoError) << s.ToString();
      errors++;
    }
    void OnPagefault(uint64_t, const UffdEvent& e) override {
      EXPECT_TRUE(sources[0]->Zeropage(e.address & ~(kPage - 1), kPage).ok());
      served++;
    }
    int served = 0;
  } h;
  h.sources = {&u};
  std::thread toucher([&] { EXPECT_EQ(m.data()[0], 0); });
  WaitReadable(u.fd());
  ASSERT_TRUE(loop->RunOnce(&h).ok());  // the read fails; the message stays queued
  EXPECT_EQ(h.errors, 1);
  EXPECT_EQ(h.served, 0);
  ASSERT_TRUE(loop->RunOnce(&h).ok());  // and is read next time
  EXPECT_EQ(h.served, 1);
  toucher.join();
}

TEST(UffdLoop, RejectsBadOptions) {
  UffdLoop::Options o;
  o.batch = 0;
  EXPECT_EQ(UffdLoop::Create(Env::Default(), o).status().code(), Code::kInvalidArgument);
  o.batch = 8;
  o.max_rounds = 0;
  EXPECT_EQ(UffdLoop::Create(Env::Default(), o).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace pagewise::sys
