// Lazy restores from s3:// images through a real S3 server: the restored
// program forks, mremaps, drops (MADV_DONTNEED) and unmaps its memory while
// pages arrive from the bucket, and every page is exact; a chunk missing
// from the bucket and an S3 outage mid-restore make the touched pages
// SIGBUS (never zeros) with the failing chunk named, and restores work
// again once the server is back, in the same process; two page servers on
// one host share one chunk cache, and concurrent readers fetch each chunk
// once between them.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "pagewise/remote.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "remote/chunk_store.h"
#include "remote/manifest.h"
#include "restore/restore_testing.h"
#include "s3_test_support.h"
#include "testing/cli_runner.h"

namespace pagewise::testing {
namespace {

constexpr int kFailureTimeoutMs = 120000;  // failure detectors only

class S3RestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // a server gone mid-test must fail a check, not kill us
    client_ = RgwClient();
    bucket_ = NewBucket(*client_);
  }
  // Pushes `buf` as an image (chunks of `chunk_bytes`) and opens it as a source.
  std::shared_ptr<PageSource> Pushed(const PatternBuffer& buf, const std::string& name,
                                     uint32_t chunk_bytes = 64 * 1024) {
    const std::string path = dir_.File(name + ".img");
    EXPECT_TRUE(WriteFlatImage(path, buf.data(), buf.size(), "", nullptr, chunk_bytes).ok());
    Result<PushStats> p = PushImage(path, Url(name));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    Result<std::shared_ptr<PageSource>> s = OpenImageSource(Url(name));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : nullptr;
  }
  std::string Url(const std::string& name) const { return "s3://" + bucket_ + "/" + name; }
  std::unique_ptr<LazyRestore> Start(std::shared_ptr<PageSource> src, size_t len,
                                     const RestoreOptions& o) {
    return StartReleased(std::move(src), len, o);
  }
  size_t Bad(const char* mem, const PatternBuffer& buf, size_t lo, size_t hi, size_t drop_lo = 0,
             size_t drop_hi = 0) {
    size_t bad = 0;
    for (size_t i = lo; i < hi; ++i) {
      const bool dropped = i >= drop_lo && i < drop_hi;
      bad += dropped ? !AllZero(mem + i * Ps(), Ps()) : !buf.Matches(mem + i * Ps(), i);
    }
    return bad;
  }

  // Bad() read on a thread of its own, a page that raises SIGBUS counting
  // as bad: for pages a failed fetch may have poisoned.
  size_t BadOrSigbus(const char* mem, const PatternBuffer& buf) {
    size_t bad = 0;
    std::thread t([&] {
      std::vector<char> page(Ps());
      for (size_t i = 0; i < buf.pages(); ++i) {
        bad += ReadPageOrSigbus(mem + i * Ps(), page.data()) || !buf.Matches(page.data(), i);
      }
    });
    t.join();
    return bad;
  }

  TempDir dir_;
  CacheDir cache_;
  std::shared_ptr<remote::S3Client> client_;
  std::string bucket_;
};

TEST_F(S3RestoreTest, ForkedChildIsServedFromTheBucketAndBothDiverge) {
  PatternBuffer buf(384, 61);
  auto src = Pushed(buf, "fork");
  ASSERT_NE(src, nullptr);
  for (int rep = 0; rep < 2; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep == 1;
    o.release_when_resident = false;
    o.fill.background_batch_pages = 8;
    auto r = Start(src, buf.size(), o);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    ASSERT_EQ(Bad(mem, buf, 0, 64), 0u);
    ASSERT_EQ(madvise(mem + 100 * Ps(), 20 * Ps(), MADV_DONTNEED), 0);
    int pfd[2];
    ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Async-signal-safe work only: the parent has threads.
      int bad = static_cast<int>(Bad(mem, buf, 0, buf.pages(), 100, 120));
      for (size_t i = 0; i < buf.pages(); ++i) FillPage(mem + i * Ps(), 500 + rep, i);
      for (size_t i = 0; i < buf.pages(); ++i) bad += !PageMatches(mem + i * Ps(), 500 + rep, i);
      _exit(write(pfd[1], &bad, sizeof(bad)) == sizeof(bad) ? 0 : 1);
    }
    close(pfd[1]);
    EXPECT_EQ(Bad(mem, buf, 0, buf.pages(), 100, 120), 0u) << "rep " << rep;
    for (size_t i = 0; i < buf.pages(); ++i) FillPage(mem + i * Ps(), 600 + rep, i);
    int child_bad = -1;
    struct pollfd pf = {pfd[0], POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, kFailureTimeoutMs), 1);
    ASSERT_EQ(read(pfd[0], &child_bad, sizeof(child_bad)), static_cast<ssize_t>(sizeof(int)));
    close(pfd[0]);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_EQ(child_bad, 0) << "rep " << rep;
    size_t mine = 0;
    for (size_t i = 0; i < buf.pages(); ++i) mine += !PageMatches(mem + i * Ps(), 600 + rep, i);
    EXPECT_EQ(mine, 0u);
    ASSERT_TRUE(r->Finish().ok());
    EXPECT_GE(r->stats().forks, 1u);
    munmap(mem, buf.size());
  }
}

TEST_F(S3RestoreTest, MremapCarriesContentAndDontneedReadsZeros) {
  PatternBuffer buf(512, 62);
  auto src = Pushed(buf, "move");
  ASSERT_NE(src, nullptr);
  for (int rep = 0; rep < 2; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep == 1;
    o.release_when_resident = false;
    o.fill.fault_window_pages = 4;
    auto r = Start(src, buf.size(), o);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    ASSERT_TRUE(buf.Matches(mem + 10 * Ps(), 10));
    // Drop a filled and an unfilled range; move one partly filled.
    ASSERT_EQ(madvise(mem + 8 * Ps(), 16 * Ps(), MADV_DONTNEED), 0);
    ASSERT_EQ(madvise(mem + 300 * Ps(), 100 * Ps(), MADV_DONTNEED), 0);
    void* hole = mmap(nullptr, 64 * Ps(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(hole, MAP_FAILED);
    char* mv = static_cast<char*>(
        mremap(mem + 100 * Ps(), 64 * Ps(), 64 * Ps(), MREMAP_MAYMOVE | MREMAP_FIXED, hole));
    ASSERT_EQ(mv, hole);
    size_t bad = 0;
    for (size_t k = 0; k < 64; ++k) bad += !buf.Matches(mv + k * Ps(), 100 + k);
    bad += Bad(mem, buf, 0, 100, 8, 24);
    bad += Bad(mem, buf, 164, buf.pages(), 300, 400);
    EXPECT_EQ(bad, 0u) << "rep " << rep;
    ASSERT_TRUE(r->WaitResident(std::chrono::milliseconds(kFailureTimeoutMs)).ok());
    bad = Bad(mem, buf, 0, 100, 8, 24) + Bad(mem, buf, 164, buf.pages(), 300, 400);
    EXPECT_EQ(bad, 0u) << "rep " << rep << " after resident";
    ASSERT_TRUE(r->Finish().ok());
    EXPECT_GE(r->stats().remaps, 1u);
    EXPECT_GE(r->stats().removes, 2u);
    munmap(mem, 100 * Ps());
    munmap(mv, 64 * Ps());
    munmap(mem + 164 * Ps(), (buf.pages() - 164) * Ps());
  }
}

TEST_F(S3RestoreTest, MunmapDuringRestoreStopsFillingThatRange) {
  PatternBuffer buf(1024, 63);
  auto src = Pushed(buf, "unmap");
  ASSERT_NE(src, nullptr);
  RestoreOptions o;
  o.fill.background_fill = false;  // nothing fills before the munmap but faults
  auto r = Start(src, buf.size(), o);
  ASSERT_NE(r, nullptr);
  char* mem = r->data(0);
  ASSERT_TRUE(buf.Matches(mem + 300 * Ps(), 300));
  ASSERT_EQ(munmap(mem + 256 * Ps(), 256 * Ps()), 0);
  ASSERT_TRUE(r->Finish().ok());  // turns the filler on for the rest
  EXPECT_EQ(Bad(mem, buf, 0, 256) + Bad(mem, buf, 512, 1024), 0u);
  const RestoreStats st = r->stats();
  EXPECT_GE(st.unmaps, 1u);
  EXPECT_LE(st.pages_demand + st.pages_background, 768u + 16u);
  munmap(mem, 256 * Ps());
  munmap(mem + 512 * Ps(), 512 * Ps());
}

// A lazy restore's engine threads run in a private copy of the fd table
// (engine.h, "File descriptors"). The chunk store's threads serve every
// restore and outlive each one: they must live in the table of the thread
// that opened the image, never in a restore's copy, or they would keep the
// copy alive, and with it every descriptor that was open when the restore
// started (here a pipe's write end: its reader would never see end of file).
TEST_F(S3RestoreTest, StoreThreadsKeepNoDescriptorOfAFinishedRestore) {
  PatternBuffer buf(256, 69);
  auto src = Pushed(buf, "fdtable");
  ASSERT_NE(src, nullptr);
  int pfd[2];
  ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
  {
    RestoreOptions o;
    o.fill.background_fill = true;  // hints go to the store's threads
    auto r = Start(src, buf.size(), o);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    ASSERT_TRUE(r->WaitResident(std::chrono::milliseconds(kFailureTimeoutMs)).ok());
    EXPECT_EQ(Bad(mem, buf, 0, buf.pages()), 0u);
    ASSERT_TRUE(r->Finish().ok());
    r.reset();  // the engine's threads are gone, and with them its table
    munmap(mem, buf.size());
  }
  ASSERT_GT(remote::ChunkStore::Shared(RemoteOptions{}).value()->stats().fetched, 0u);
  close(pfd[1]);
  // The last write end is gone once the exiting engine threads have dropped
  // their table (a thread's join can return just before that): wait for the
  // hang-up, with a timeout only as a failure detector.
  struct pollfd pf = {pfd[0], POLLIN, 0};
  EXPECT_EQ(poll(&pf, 1, 30000), 1) << "a copy of the pipe's write end is still open";
  EXPECT_TRUE(pf.revents & POLLHUP);
  close(pfd[0]);
}

TEST_F(S3RestoreTest, MissingChunkMakesItsPagesSigbusNeverZeros) {
  PatternBuffer buf(256, 64);
  auto src = Pushed(buf, "missing", 16 * 1024);  // 4-page chunks
  ASSERT_NE(src, nullptr);
  // Delete one chunk object: the pages it holds have nothing to come from.
  bool complete = false;
  Result<std::vector<std::string>> keys =
      client_->ListKeys(bucket_, remote::kChunkPrefix, 10, &complete, In(30));
  ASSERT_TRUE(keys.ok() && !keys->empty());
  ASSERT_TRUE(client_->DeleteObject(bucket_, (*keys)[0], In(30)).ok());
  const std::string gone = (*keys)[0];
  RestoreOptions o;
  o.fill.background_fill = false;
  o.fill.fault_window_pages = 1;
  auto r = Start(src, buf.size(), o);
  ASSERT_NE(r, nullptr);
  char* mem = r->data(0);
  std::vector<char> page(Ps());
  size_t sigbus = 0, good = 0;
  std::thread reader([&] {
    for (size_t i = 0; i < buf.pages(); ++i) {
      if (ReadPageOrSigbus(mem + i * Ps(), page.data())) {
        sigbus++;
      } else {
        good += buf.Matches(page.data(), i);
      }
    }
  });
  reader.join();
  EXPECT_GT(sigbus, 0u) << "pages of the missing chunk must not read as anything";
  EXPECT_EQ(sigbus + good, buf.pages()) << "every other page is exact";
  Status s = r->Finish();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(gone), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("chunk"), std::string::npos) << s.ToString();
  munmap(mem, buf.size());
}

TEST_F(S3RestoreTest, OutageMidRestoreSigbusesThenRestoresWorkAgain) {
  PatternBuffer buf(512, 65);
  // Reads give up 3 s into an outage (the default is 30 s).
  setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "3000", 1);
  auto src = Pushed(buf, "outage", 16 * 1024);
  ASSERT_NE(src, nullptr);
  RestoreOptions o;
  o.fill.background_fill = false;
  o.fill.fault_window_pages = 1;
  auto r = Start(src, buf.size(), o);
  ASSERT_NE(r, nullptr);
  char* mem = r->data(0);
  EXPECT_TRUE(buf.Matches(mem, 0));
  ASSERT_TRUE(Rgw().StopGateway().ok());
  std::vector<char> page(Ps());
  bool bus = false;
  std::thread reader([&] { bus = ReadPageOrSigbus(mem + 400 * Ps(), page.data()); });
  reader.join();
  ASSERT_TRUE(Rgw().StartGateway().ok());
  EXPECT_TRUE(bus) << "a page that could not be fetched must not read as anything";
  Status s = r->Finish();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("chunk"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("pagewise/chunks/"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.ToString();
  munmap(mem, buf.size());
  // The server is back: a new restore from the same source (same process,
  // same store) is complete and exact.
  RestoreOptions again;
  auto r2 = Start(src, buf.size(), again);
  ASSERT_NE(r2, nullptr);
  EXPECT_EQ(BadOrSigbus(r2->data(0), buf), 0u);
  EXPECT_TRUE(r2->Finish().ok());
  munmap(r2->data(0), buf.size());
  setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "20000", 1);
}

TEST_F(S3RestoreTest, ConcurrentPullsShareOneCacheAndFetchEachChunkOnce) {
  PatternBuffer buf(2048, 66);
  ASSERT_NE(Pushed(buf, "shared"), nullptr);
  // The Pushed() open fetched nothing; start from an empty cache anyway.
  CacheDir fresh;
  bool complete = false;
  Result<std::vector<std::string>> keys =
      client_->ListKeys(bucket_, remote::kChunkPrefix, 10, &complete, In(30));
  ASSERT_TRUE(keys.ok());
  CliResult results[2];
  std::thread a([&] {
    results[0] = RunCli(PAGEWISE_CLI_PATH, {"pull", Url("shared"), dir_.File("a.img"), "--json"});
  });
  std::thread b([&] {
    results[1] = RunCli(PAGEWISE_CLI_PATH, {"pull", Url("shared"), dir_.File("b.img"), "--json"});
  });
  a.join();
  b.join();
  uint64_t fetched = 0, from_cache = 0;
  for (const CliResult& r : results) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out);
    fetched += j["chunks_fetched"].get<uint64_t>();
    from_cache += j["chunks_cached"].get<uint64_t>() + j["chunks_from_peer"].get<uint64_t>();
  }
  EXPECT_EQ(fetched, keys->size()) << "each chunk fetched once between the two processes";
  EXPECT_EQ(fetched + from_cache, 2 * keys->size());
  EXPECT_TRUE(ReadWholeFile(dir_.File("a.img")) == ReadWholeFile(dir_.File("shared.img")));
  EXPECT_TRUE(ReadWholeFile(dir_.File("b.img")) == ReadWholeFile(dir_.File("shared.img")));
}

// `pagewise serve` as a child process with its stderr captured.
struct Server {
  pid_t pid = -1;
  int out = -1, err = -1;
  bool Spawn(const std::vector<std::string>& args) {
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC) != 0 || pipe2(e, O_CLOEXEC) != 0) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, o[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, e[1], STDERR_FILENO);
    std::vector<std::string> s = {PAGEWISE_CLI_PATH, "serve"};
    s.insert(s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid, PAGEWISE_CLI_PATH, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(o[1]);
    close(e[1]);
    out = o[0];
    err = e[0];
    return rc == 0;
  }
  bool WaitListening() {
    std::string line;
    char c;
    while (line.find('\n') == std::string::npos) {
      struct pollfd pf = {out, POLLIN, 0};
      if (poll(&pf, 1, kFailureTimeoutMs) != 1 || read(out, &c, 1) != 1) return false;
      line += c;
    }
    return line.find("listening on") != std::string::npos;
  }
  // Stops it (SIGTERM) and returns its stderr.
  std::string StopAndReadErr() {
    kill(pid, SIGTERM);
    std::string all;
    char b[4096];
    for (;;) {
      struct pollfd pf = {err, POLLIN, 0};
      if (poll(&pf, 1, kFailureTimeoutMs) != 1) break;
      const ssize_t n = read(err, b, sizeof(b));
      if (n <= 0) break;
      all.append(b, static_cast<size_t>(n));
    }
    int st = 0;
    pid_t w;
    do {
      w = waitpid(pid, &st, 0);
    } while (w < 0 && errno == EINTR);
    EXPECT_EQ(w, pid);
    EXPECT_TRUE(WIFEXITED(st) || WIFSIGNALED(st)) << "serve did not stop on SIGTERM";
    close(out);
    close(err);
    pid = -1;
    return all;
  }
  ~Server() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

// Client memory restored from a server: returns the mapping (caller unmaps).
char* Restore(const std::string& sock, size_t len, std::unique_ptr<LazyClient>* client) {
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  Region g;
  g.address = reinterpret_cast<uint64_t>(m);
  g.length = len;
  g.page_size = Ps();
  Result<std::unique_ptr<LazyClient>> c = LazyClient::Connect(sock, {g});
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  if (c.ok()) *client = std::move(*c);
  return static_cast<char*>(m);
}

TEST_F(S3RestoreTest, TwoServersShareOneCacheAndAServerSurvivesAnOutage) {
  PatternBuffer buf(1024, 67);
  ASSERT_NE(Pushed(buf, "served", 16 * 1024), nullptr);
  CacheDir shared;  // both servers' cache
  Server s1, s2;
  const std::string sock1 = dir_.File("s1.sock"), sock2 = dir_.File("s2.sock");
  ASSERT_TRUE(s1.Spawn({"--socket", sock1, "--image", Url("served")}) && s1.WaitListening());
  ASSERT_TRUE(s2.Spawn({"--socket", sock2, "--image", Url("served"), "--no-background"}) &&
              s2.WaitListening());
  {
    std::unique_ptr<LazyClient> c1, c2;
    char* m1 = Restore(sock1, buf.size(), &c1);
    char* m2 = Restore(sock2, buf.size(), &c2);
    ASSERT_TRUE(c1 && c2);
    EXPECT_EQ(BadOrSigbus(m1, buf), 0u);
    EXPECT_EQ(BadOrSigbus(m2, buf), 0u);
    c1.reset();
    c2.reset();
    munmap(m1, buf.size());
    munmap(m2, buf.size());
  }
  std::string err2;
  {
    // Outage mid-restore: a fresh server with an empty cache (the chunks it
    // needs are nowhere but in the bucket) and a client mid-restore; its
    // next fault is SIGBUS, and the server logs which chunk and why.
    CacheDir empty;
    setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "3000", 1);  // server 3 gives up 3 s into the outage
    Server s3;
    const std::string sock3 = dir_.File("s3.sock");
    ASSERT_TRUE(s3.Spawn({"--socket", sock3, "--image", Url("served"), "--no-background"}) &&
                s3.WaitListening());
    std::unique_ptr<LazyClient> c;
    char* m = Restore(sock3, buf.size(), &c);
    ASSERT_TRUE(c);
    std::vector<char> first(Ps());
    std::thread t0([&] { EXPECT_FALSE(ReadPageOrSigbus(m + 5 * Ps(), first.data())); });
    t0.join();
    EXPECT_TRUE(buf.Matches(first.data(), 5));
    ASSERT_TRUE(Rgw().StopGateway().ok());
    std::vector<char> page(Ps());
    bool bus = false;
    std::thread t([&] { bus = ReadPageOrSigbus(m + 900 * Ps(), page.data()); });
    t.join();
    ASSERT_TRUE(Rgw().StartGateway().ok());
    EXPECT_TRUE(bus) << "never zeros";
    c.reset();
    // The same server, with S3 back: a new client restores completely.
    // (The failed client's memory stays mapped until the end: a new mapping
    // at the same address saw the failed window's 16 pages SIGBUS without a
    // fault reaching the server, in 2 of 3 runs - reported, not this test's
    // subject.)
    std::unique_ptr<LazyClient> c2;
    char* m2 = Restore(sock3, buf.size(), &c2);
    ASSERT_TRUE(c2);
    EXPECT_EQ(BadOrSigbus(m2, buf), 0u);
    c2.reset();
    munmap(m2, buf.size());
    munmap(m, buf.size());
    err2 = s3.StopAndReadErr();
  }
  EXPECT_NE(err2.find("pagewise/chunks/"), std::string::npos) << err2;
  EXPECT_NE(err2.find("chunk"), std::string::npos) << err2;
  setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "20000", 1);
  s1.StopAndReadErr();
  s2.StopAndReadErr();
}

}  // namespace
}  // namespace pagewise::testing
