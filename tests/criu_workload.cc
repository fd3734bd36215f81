// criu_workload: a program for CRIU tests and `pagewise bench criu` to dump
// and restore. It is started as a user would start any program (standard
// descriptors on /dev/null), fills anonymous memory with a pattern derived
// from each word's address, says it is ready, and waits for SIGUSR1. A test
// then dumps it with `criu dump`, restores it with `criu restore
// --lazy-pages` beside a lazy-pages daemon, and sends SIGUSR1: the program
// checks every byte of its memory itself, performing the requested actions
// on memory that is still being restored, and exits 0 only if all content
// was exact.
//
// Usage: criu_workload --mib N [--threads T] [--ready FIFO] [--report FILE]
//                      [--actions fork,mremap,dontneed,munmap] [--heavy]
//                      [--emit | --consume]
//   --ready FIFO   write one byte to FIFO once memory is filled
//   --report FILE  after restore, write "key value" lines (timings) to FILE
//   --heavy        every thread reads random pages until all are read
//                  (the benchmark's heavy reader); times each first touch
//   --emit         after checking, write the memory to stdout (a pipeline)
//   --consume      after checking, read --mib MiB from stdin and check it
//                  against the producer's pattern
//   --zombie       leave an exited, unreaped child in the dumped tree (CRIU
//                  restores it as a zombie); reaped after the restore
// Exit status: 0 all exact; 1 a mismatch (printed on stderr); 2 bad usage or
// a system call failed.
//
// Thread safety: the worker threads share only read-only state and atomics.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kPage = 4096;
constexpr uint64_t kSeed = 0x5ca1ab1e0ddba11ULL;

volatile sig_atomic_t g_go = 0;
void OnGo(int) { g_go = 1; }

// The pattern: a word's value depends on the address it was written at.
// Low entropy on purpose (like real heaps, it compresses), yet every word
// names its own address: a page installed at the wrong place, or as zeros,
// never passes.
uint64_t WordAt(uint64_t addr) { return (addr ^ kSeed) | 1; }

void FillRange(char* p, size_t len) {
  auto* w = reinterpret_cast<uint64_t*>(p);
  for (size_t i = 0; i < len / 8; ++i) w[i] = WordAt(reinterpret_cast<uint64_t>(p) + i * 8);
}

// Checks [p, p+len) holds the pattern written at `orig` (its address before
// any move). Returns the number of bad words (prints the first).
size_t CheckRange(const char* p, size_t len, uint64_t orig, const char* what) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  size_t bad = 0;
  for (size_t i = 0; i < len / 8; ++i) {
    if (w[i] != WordAt(orig + i * 8)) {
      if (bad == 0) {
        std::fprintf(
            stderr, "criu_workload %d: %s: word at %p (orig %#llx) is %#llx, expected %#llx\n",
            getpid(), what, static_cast<const void*>(p + i * 8),
            static_cast<unsigned long long>(orig + i * 8), static_cast<unsigned long long>(w[i]),
            static_cast<unsigned long long>(WordAt(orig + i * 8)));
      }
      ++bad;
    }
  }
  return bad;
}

size_t CheckZero(const char* p, size_t len, const char* what) {
  for (size_t i = 0; i < len; ++i) {
    if (p[i] != 0) {
      std::fprintf(stderr, "criu_workload %d: %s: byte at %p is %d, expected 0\n", getpid(), what,
                   static_cast<const void*>(p + i), p[i]);
      return 1;
    }
  }
  return 0;
}

struct Args {
  size_t mib = 16;
  int threads = 1;
  std::string ready, report, actions;
  bool heavy = false, emit = false, consume = false, zombie = false;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr, "criu_workload: %s\n", why);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + k).c_str());
      return argv[++i];
    };
    if (k == "--mib") {
      a.mib = std::strtoull(val().c_str(), nullptr, 10);
    } else if (k == "--threads") {
      a.threads = std::atoi(val().c_str());
    } else if (k == "--ready") {
      a.ready = val();
    } else if (k == "--report") {
      a.report = val();
    } else if (k == "--actions") {
      a.actions = val();
    } else if (k == "--heavy") {
      a.heavy = true;
    } else if (k == "--emit") {
      a.emit = true;
    } else if (k == "--consume") {
      a.consume = true;
    } else if (k == "--zombie") {
      a.zombie = true;
    } else {
      Usage(("unknown argument " + k).c_str());
    }
  }
  if (a.mib == 0 || a.threads < 1 || a.threads > 64) Usage("bad --mib or --threads");
  return a;
}

bool Has(const std::string& list, const char* action) {
  return ("," + list + ",").find("," + std::string(action) + ",") != std::string::npos;
}

double NowUs() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Checks the heap with `threads` threads, each a slice. Returns bad words.
size_t ParallelCheck(char* base, size_t len, int threads) {
  std::atomic<size_t> bad{0};
  std::vector<std::thread> ts;
  const size_t pages = len / kPage;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      const size_t lo = pages * t / threads, hi = pages * (t + 1) / threads;
      bad += CheckRange(base + lo * kPage, (hi - lo) * kPage,
                        reinterpret_cast<uint64_t>(base) + lo * kPage, "heap");
    });
  }
  for (auto& t : ts) t.join();
  return bad.load();
}

// The heavy reader: every thread touches pages in its own random order
// until every page has been touched by someone; each first touch is timed.
size_t HeavyRead(char* base, size_t len, size_t hole_at, size_t hole_len, int threads,
                 std::vector<float>* lat_us) {
  const size_t pages = len / kPage;
  std::vector<std::atomic<uint8_t>> seen(pages);
  std::atomic<size_t> bad{0};
  std::mutex mu;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<float> mine;
      uint64_t x = 0x9e3779b97f4a7c15ULL * (t + 1);
      std::vector<uint32_t> order(pages);
      for (size_t i = 0; i < pages; ++i) order[i] = static_cast<uint32_t>(i);
      for (size_t i = pages; i > 1; --i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        std::swap(order[i - 1], order[x % i]);
      }
      for (uint32_t p : order) {
        if (seen[p].exchange(1) != 0) continue;
        char* pg = base + size_t{p} * kPage;
        const double t0 = NowUs();
        const uint64_t w = *reinterpret_cast<volatile uint64_t*>(pg);
        mine.push_back(static_cast<float>(NowUs() - t0));
        const size_t off = size_t{p} * kPage;
        const bool in_hole = off >= hole_at && off < hole_at + hole_len;
        if (w != (in_hole ? 0 : WordAt(reinterpret_cast<uint64_t>(pg)))) ++bad;
      }
      std::lock_guard<std::mutex> lk(mu);
      lat_us->insert(lat_us->end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : ts) t.join();
  return bad.load();
}

// Forks a child that checks a part of the heap (pages may still be missing:
// the daemon must serve the child too) and exits with its verdict.
size_t ForkAndCheck(char* base, size_t len) {
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(2);
  }
  if (pid == 0) {
    const size_t bad = CheckRange(base, len, reinterpret_cast<uint64_t>(base), "forked child");
    _exit(bad ? 1 : 0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return 1;
  return (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : 1;
}

size_t Consume(size_t len) {
  // The producer's heap was at an address we do not know: read its first
  // word's address from the stream header, then check the stream.
  uint64_t orig = 0;
  if (std::fread(&orig, 8, 1, stdin) != 1) {
    std::fprintf(stderr, "criu_workload: --consume: no header\n");
    return 1;
  }
  std::vector<char> buf(1 << 20);
  size_t done = 0, bad = 0;
  while (done < len) {
    const size_t n = std::fread(buf.data(), 1, std::min(buf.size(), len - done), stdin);
    if (n == 0 || n % 8) {
      std::fprintf(stderr, "criu_workload: --consume: stream ended at %zu of %zu\n", done, len);
      return bad + 1;
    }
    bad += CheckRange(buf.data(), n, orig + done, "pipe stream");
    done += n;
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = OnGo;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &block, &old);  // threads start with it blocked

  const size_t len = a.mib << 20;
  char* base = static_cast<char*>(
      mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED) {
    std::perror("mmap");
    return 2;
  }
  // A hole of never-touched pages in the middle: they must read as zero.
  const size_t hole_at = len / 2, hole_len = 4 * kPage;
  FillRange(base, hole_at);
  FillRange(base + hole_at + hole_len, len - hole_at - hole_len);

  // Idle threads that exist while the program is dumped (a multi-threaded
  // dump); they park until the go signal.
  std::atomic<bool> go{false};
  std::vector<std::thread> idle;
  for (int t = 1; t < a.threads; ++t) {
    idle.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
    });
  }
  pid_t zombie = -1;
  if (a.zombie) {
    zombie = fork();
    if (zombie == 0) _exit(7);
    siginfo_t si;
    // Wait until it has exited, without reaping it: a zombie when dumped.
    if (zombie < 0 || waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) != 0) {
      std::perror("zombie");
      return 2;
    }
  }
  if (!a.ready.empty()) {
    const int fd = open(a.ready.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "R", 1) != 1) {
      std::perror("ready fifo");
      return 2;
    }
    close(fd);
  }
  while (!g_go) sigsuspend(&old);  // dumped and restored here
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  const double t_go = NowUs();
  go = true;
  for (auto& t : idle) t.join();

  size_t bad = 0;
  if (zombie > 0) {
    int st = 0;
    if (waitpid(zombie, &st, 0) != zombie || !WIFEXITED(st) || WEXITSTATUS(st) != 7) {
      std::fprintf(stderr, "criu_workload: the zombie child was not restored as one\n");
      ++bad;
    }
  }
  // Actions on memory still being restored, before the full check.
  const size_t q = len / 4;
  char* moved = nullptr;
  size_t moved_len = 0;
  uint64_t moved_orig = 0;
  if (Has(a.actions, "fork")) bad += ForkAndCheck(base, q);
  if (Has(a.actions, "dontneed")) {
    madvise(base + q, 16 * kPage, MADV_DONTNEED);
    bad += CheckZero(base + q, 16 * kPage, "after MADV_DONTNEED");
    FillRange(base + q, 16 * kPage);  // the full check below expects the pattern
  }
  if (Has(a.actions, "mremap")) {
    // Move the last quarter elsewhere: its content keeps the old addresses'
    // pattern.
    moved_len = q;
    moved_orig = reinterpret_cast<uint64_t>(base + len - q);
    void* to = mmap(nullptr, q, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    moved = static_cast<char*>(mremap(base + len - q, q, q, MREMAP_MAYMOVE | MREMAP_FIXED, to));
    if (moved == MAP_FAILED) {
      std::perror("mremap");
      return 2;
    }
  }
  size_t check_len = moved ? len - q : len;
  if (Has(a.actions, "munmap")) {
    // Drop the third quarter (pages may never have been served).
    munmap(base + 2 * q, q);
    check_len = 2 * q;
  }

  std::vector<float> lat;
  if (a.heavy) {
    bad += HeavyRead(base, check_len, hole_at, hole_len, a.threads, &lat);
  }
  const double t_read = NowUs();
  if (check_len > hole_at + hole_len) {
    bad += ParallelCheck(base, hole_at, a.threads);
    bad += CheckZero(base + hole_at, hole_len, "never-touched hole");
    bad += CheckRange(base + hole_at + hole_len, check_len - hole_at - hole_len,
                      reinterpret_cast<uint64_t>(base + hole_at + hole_len), "heap");
  } else {
    bad += ParallelCheck(base, check_len, a.threads);
  }
  if (moved) bad += CheckRange(moved, moved_len, moved_orig, "mremapped range");

  if (a.emit) {
    const uint64_t orig = reinterpret_cast<uint64_t>(base);
    if (std::fwrite(&orig, 8, 1, stdout) != 1 || std::fwrite(base, 1, hole_at, stdout) != hole_at) {
      std::perror("emit");
      return 2;
    }
    std::fflush(stdout);
  }
  if (a.consume) bad += Consume(hole_at);

  if (!a.report.empty()) {
    FILE* f = std::fopen(a.report.c_str(), "w");
    if (f == nullptr) {
      std::perror("report");
      return 2;
    }
    std::sort(lat.begin(), lat.end());
    const double p99 = lat.empty() ? 0 : lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
    std::fprintf(f, "heavy_reader_us %.0f\nfault_p99_us %.2f\npages_read %zu\nbad %zu\n",
                 t_read - t_go, p99, lat.size(), bad);
    std::fclose(f);
  }
  if (bad) {
    std::fprintf(stderr, "criu_workload %d: %zu bad words\n", getpid(), bad);
    return 1;
  }
  return 0;
}
