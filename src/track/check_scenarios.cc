// Scenario disturbers for the never-lose-a-write check: the things real
// programs do to tracked memory while it is being written and collected.
//
// Writer thread 0 hosts the disturber: between its write batches it calls
// MaybeAct(), which acts when the scenario's interval has passed. (A separate
// thread woken per collect was tried: on a loaded machine its wake-ups lag by
// a whole scheduler slice, so it acted a few dozen times a second.) Its
// mprotect/madvise calls go through libc on purpose (sys/program_mm.h): they
// model a user program that knows nothing of pagewise, so they do not go
// through Env, which bypasses libpagewise-interpose.
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <string>

#include "pagewise/status.h"
#include "sys/env.h"
#include "sys/process.h"
#include "sys/program_mm.h"
#include "sys/signal_handler.h"
#include "sys/task.h"
#include "track/check_internal.h"

#if defined(__SANITIZE_THREAD__)
#define PAGEWISE_CHECK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PAGEWISE_CHECK_TSAN 1
#endif
#endif
#ifdef PAGEWISE_CHECK_TSAN
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace pagewise::check_internal {
namespace {

// How long a fork child may take to write its pages and exit. A child that
// takes longer is stuck (e.g. deadlocked in an inherited signal handler).
constexpr int kChildTimeoutMs = 20000;
constexpr int kChildWrites = 32;

std::string RangeText(const char* what, const char* addr, size_t len) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s [%p, +0x%zx)", what, static_cast<const void*>(addr), len);
  return buf;
}

// A random run of 1..max_pages pages inside the region: [*start, *start+*len),
// starting in the writers' hot window if `hot`, anywhere otherwise.
void RandomRun(RunState* st, Rng* rng, bool hot, size_t max_pages, char** start, size_t* len) {
  const size_t first = hot ? st->HotPage(NowNs(), rng) : rng->Below(st->npages);
  const size_t n = std::min<size_t>(1 + rng->Below(max_pages), st->npages - first);
  *start = st->region + first * st->page;
  *len = n * st->page;
}

Status DropRun(RunState* st, Rng* rng) {
  char* p;
  size_t len;
  RandomRun(st, rng, rng->Below(2) == 0, 32, &p, &len);
  if (Status s = sys::ProgramMadvise(p, len, MADV_DONTNEED); !s.ok()) {
    return ErrnoStatus(s.err(), RangeText("check dontneed: madvise(MADV_DONTNEED)", p, len));
  }
  return Status::Ok();
}

// Splits one THP: MADV_DONTNEED of a single 4 KiB page inside an
// even-numbered huge page (odd-numbered ones are left whole).
Status SplitHuge(RunState* st, Rng* rng) {
  const size_t huge_count = st->npages * st->page / st->huge;
  const size_t h = rng->Below((huge_count + 1) / 2) * 2;
  if (h >= huge_count) return Status::Ok();
  char* p = st->region + h * st->huge + rng->Below(st->huge / st->page) * st->page;
  if (Status s = sys::ProgramMadvise(p, st->page, MADV_DONTNEED); !s.ok()) {
    return ErrnoStatus(
        s.err(), RangeText("check thp: madvise(MADV_DONTNEED) inside a huge page", p, st->page));
  }
  return Status::Ok();
}

Status ReleaseChunk(RunState* st, Toggle* t) {
  if (t->chunk < 0) return Status::Ok();
  if (Status s = sys::ProgramMprotect(t->start, t->len, PROT_READ | PROT_WRITE); !s.ok()) {
    return ErrnoStatus(s.err(), RangeText("check mprotect: mprotect(RW) back", t->start, t->len));
  }
  st->chunk_state[t->chunk].store(0, std::memory_order_release);
  t->chunk = -1;
  st->scenario_ops.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

// One action: if a chunk has been held READ since before the last collect
// round, make it RW again and free it; if none is held, take a free chunk (no
// writer inside) and make a random run of it READ, to be held across the
// next collect. Then mprotect(RW) a random run that writers may be writing
// this very moment.
Status ToggleProtection(RunState* st, Rng* rng, Toggle* t) {
  const uint32_t round = st->rounds.load(std::memory_order_acquire);
  if (t->chunk >= 0) {
    if (round != t->round) PW_RETURN_IF_ERROR(ReleaseChunk(st, t));
  } else {
    for (int tries = 0; tries < 8; ++tries) {
      // Half the time a chunk where writers are busy, else any chunk.
      const size_t c =
          (rng->Below(2) == 0 ? st->HotPage(NowNs(), rng) / kChunkPages : rng->Below(st->nchunks));
      int32_t free_state = 0;
      if (!st->chunk_state[c].compare_exchange_strong(free_state, -1, std::memory_order_acq_rel)) {
        continue;  // writers inside: try another chunk
      }
      const size_t first = c * kChunkPages;
      const size_t pages = std::min(kChunkPages, st->npages - first);
      const size_t a = rng->Below(pages);
      const size_t n = 1 + rng->Below(pages - a);
      t->chunk = static_cast<long>(c);
      t->round = round;
      t->start = st->region + (first + a) * st->page;
      t->len = n * st->page;
      if (Status m = sys::ProgramMprotect(t->start, t->len, PROT_READ); !m.ok()) {
        Status s =
            ErrnoStatus(m.err(), RangeText("check mprotect: mprotect(READ)", t->start, t->len));
        st->chunk_state[c].store(0, std::memory_order_release);
        t->chunk = -1;
        return s;
      }
      st->scenario_ops.fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  char* p;
  size_t len;
  RandomRun(st, rng, true, 64, &p, &len);
  // The held chunk (if any) must stay READ: trim the run to end before it.
  if (t->chunk >= 0 && p < t->start + t->len && p + len > t->start) {
    len = p < t->start ? static_cast<size_t>(t->start - p) : 0;
  }
  if (len > 0) {
    if (Status s = sys::ProgramMprotect(p, len, PROT_READ | PROT_WRITE); !s.ok()) {
      return ErrnoStatus(s.err(),
                         RangeText("check mprotect: mprotect(RW) of written pages", p, len));
    }
    st->scenario_ops.fetch_add(1, std::memory_order_relaxed);
  }
  return Status::Ok();
}

// Forks a child that writes kChildWrites random pages of its own copy of the
// region, checks it reads them back, reports on a pipe and _exits. The child
// runs only async-signal-safe code (memory stores, sys/signal_handler.h's
// close and write, _exit).
Status ForkOnce(RunState* st, Rng* rng) {
  int fds[2];
  if (Status s = sys::MakePipe(fds); !s.ok()) return ErrnoStatus(s.err(), "check fork: pipe2");
  const uint64_t child_seed = rng->Next();
  Result<pid_t> forked = sys::Fork();
  if (!forked.ok()) {
    Status s = ErrnoStatus(forked.status().err(), "check fork: fork");
    sys::CloseFd(fds[0]).IgnoreError();  // our own pipe: nothing to report
    sys::CloseFd(fds[1]).IgnoreError();
    return s;
  }
  const pid_t pid = *forked;
  if (pid == 0) {
    sys::SignalSafeClose(fds[0]);
    Rng crng(child_seed);
    bool ok = true;
    for (int i = 0; i < kChildWrites; ++i) {
      const uint64_t p = crng.Below(st->npages);
      volatile uint64_t* slot =
          reinterpret_cast<volatile uint64_t*>(st->region + p * st->page + kChildSlot * kSlotBytes);
      slot[0] = kChildTag;
      slot[1] = p;
      ok = ok && slot[0] == kChildTag && slot[1] == p;
    }
    const char byte = ok ? 'k' : 'x';
    const ssize_t w = sys::SignalSafeWrite(fds[1], &byte, 1);
    sys::ExitChild(ok && w == 1 ? 0 : 1);
  }
  sys::CloseFd(fds[1]).IgnoreError();  // our own pipe: nothing to report
  struct pollfd pfd = {fds[0], POLLIN, 0};
  Result<int> polled = Env::Default()->Poll(&pfd, 1, kChildTimeoutMs);  // EINTR retried
  const int ready = polled.ok() ? *polled : -1;
  char byte = 0;
  bool reported = false;
  if (ready > 0) {
    Result<size_t> n = sys::ReadSome(fds[0], &byte, 1);
    reported = n.ok() && *n == 1;
  }
  sys::CloseFd(fds[0]).IgnoreError();
  if (ready == 0) sys::KillProcess(pid, SIGKILL).IgnoreError();  // our own child, stuck
  Result<int> waited = sys::WaitPid(pid);                        // EINTR retried
  if (!waited.ok()) {
    return ErrnoStatus(waited.status().err(), "check fork: waitpid(" + std::to_string(pid) + ")");
  }
  const int wstatus = *waited;
  if (ready == 0) {
    return Status::Internal("check fork: child " + std::to_string(pid) + " did not finish " +
                            std::to_string(kChildWrites) +
                            " writes to its copy of the tracked "
                            "region within " +
                            std::to_string(kChildTimeoutMs / 1000) +
                            " s (stuck, killed); the tracker breaks fork children");
  }
  if (WIFSIGNALED(wstatus)) {
    return Status::Internal("check fork: child " + std::to_string(pid) +
                            " writing its copy of "
                            "the tracked region died of signal " +
                            std::to_string(WTERMSIG(wstatus)) +
                            "; the tracker breaks fork children");
  }
  if (!reported || byte != 'k' || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return Status::Internal("check fork: child " + std::to_string(pid) +
                            " could not write and read back its copy of the tracked region");
  }
  return Status::Ok();
}

// Has the kernel write a fresh stamp into kKernelSlot of a random hot page:
// the stamp goes into a pipe and read(2) copies it into tracked memory.
Status KernelWrite(RunState* st, Rng* rng, const int pipe_fds[2], uint64_t* count) {
  const uint64_t p = st->HotPage(NowNs(), rng);
  const uint64_t stamp[2] = {StampTag(p, kKernelSlot), ++*count};
  char* dst = st->region + p * st->page + kKernelSlot * kSlotBytes;
  // A pipe write below PIPE_BUF bytes is whole or fails: WriteAll does not
  // split it.
  if (Status s = sys::WriteAll(pipe_fds[1], stamp, sizeof stamp); !s.ok()) {
    return ErrnoStatus(s.err(), "check syscall: write to the stamp pipe");
  }
  // ReadSome is libc's read(2) (which libpagewise-interpose sees), EINTR
  // retried.
#ifdef PAGEWISE_CHECK_TSAN
  // TSan models read(2) as a plain store into dst, racing the collector's
  // atomic loads. The store is the kernel's, like a DONTNEED's zeroing:
  // the race is what the scenario tests, so keep it out of TSan's view.
  __tsan_ignore_thread_begin();
#endif
  Result<size_t> n = sys::ReadSome(pipe_fds[0], dst, sizeof stamp);
#ifdef PAGEWISE_CHECK_TSAN
  __tsan_ignore_thread_end();
#endif
  if (!n.ok()) {
    // Not the caller's bad argument (ErrnoStatus maps EFAULT so): the
    // tracker broke a correct program.
    Status s = ErrnoStatus(
        n.status().err(),
        RangeText("check syscall: read(2) from a pipe into tracked memory", dst, sizeof stamp),
        "the backend let a system call that writes into tracked memory fail "
        "(kernel writes raise no SIGSEGV; the mprotect backend opens read(2) "
        "destinations first, src/track/kernel_writes.h)");
    return Status(Code::kFailedPrecondition, s.err(), s.message());
  }
  if (*n != sizeof stamp) {
    return Status::Internal("check syscall: short read(2) of " + std::to_string(*n) +
                            " bytes from the stamp pipe");
  }
  return Status::Ok();
}

}  // namespace

Disturber::Disturber(RunState* st) : st_(st), rng_(st->seed ^ 0xD157AB3ull) {
  switch (st->scenario) {
    case CheckScenario::kDontneed:
      interval_ns_ = 200000;
      break;
    case CheckScenario::kMprotect:
      interval_ns_ = 100000;
      break;
    // A fork of a large populated process takes ~10 ms and blocks page faults
    // meanwhile: leave time for writes and collects in between.
    case CheckScenario::kFork:
      interval_ns_ = 25000000;
      break;
    case CheckScenario::kThp:
      interval_ns_ = 5000000;
      break;
    case CheckScenario::kSyscall:
      interval_ns_ = 50000;
      if (Status s = sys::MakePipe(pipe_); !s.ok()) {
        st->Fail(ErrnoStatus(s.err(), "check syscall: pipe2"));
        active_ = false;
      }
      break;
    case CheckScenario::kHugetlb:
      interval_ns_ = 2000000;
      break;
    case CheckScenario::kWrites:
    case CheckScenario::kShmem:
    case CheckScenario::kKvm:
      active_ = false;
      break;
  }
}

Disturber::~Disturber() {
  if (pipe_[0] >= 0) sys::CloseFd(pipe_[0]).IgnoreError();  // our own pipe: nothing to report
  if (pipe_[1] >= 0) sys::CloseFd(pipe_[1]).IgnoreError();
}

Status Disturber::MaybeAct(uint64_t now_ns) {
  if (!active_ || now_ns < next_ns_) return Status::Ok();
  next_ns_ = now_ns + interval_ns_;
  Status s;
  switch (st_->scenario) {
    case CheckScenario::kDontneed:
      s = DropRun(st_, &rng_);
      break;
    case CheckScenario::kMprotect:
      s = ToggleProtection(st_, &rng_, toggle_.get());
      break;
    case CheckScenario::kFork:
      s = ForkOnce(st_, &rng_);
      break;
    case CheckScenario::kThp:
      s = SplitHuge(st_, &rng_);
      break;
    case CheckScenario::kSyscall:
      s = KernelWrite(st_, &rng_, pipe_, &kernel_writes_);
      break;
    case CheckScenario::kHugetlb:
      s = DropHugePage(st_, &rng_);
      break;
    case CheckScenario::kWrites:
    case CheckScenario::kShmem:
    case CheckScenario::kKvm:
      break;
  }
  if (s.ok() && st_->scenario != CheckScenario::kMprotect) {
    st_->scenario_ops.fetch_add(1, std::memory_order_relaxed);
  }
  return s;
}

Status Disturber::Finish() {
  if (!active_) return Status::Ok();
  return ReleaseChunk(st_, toggle_.get());
}

}  // namespace pagewise::check_internal
