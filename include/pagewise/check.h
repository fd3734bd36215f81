// Check: proves the tracker contract (never lose a write) on this kernel.
//
// RunCheck() maps a region of the chosen kind, tracks it, and lets N writer
// threads stamp random pages with unique (thread, counter) values while the
// calling thread collects: it calls Tracker::Collect() again and again and
// copies every reported page into a replica buffer. Writer thread 0 also
// disturbs the region the way real programs do (MADV_DONTNEED, mprotect,
// fork, THP splits). When the run time is over the writers stop, one last
// Collect() and copy run, and the replica is compared with the source page
// by page: every page that differs is a write the tracker lost.
//
// Why a difference means a lost write: every write stores a value never
// stored before, and any page reported after its last write is copied after
// that write landed. A page whose final write was never reported keeps an
// older copy in the replica. A lost write followed by a reported write to
// the same page would be masked, so writers write random pages of a hot
// window that sweeps once through the region during the run: pages behind
// it are not written again and a lost last write stays visible. Each writer
// makes a quota of writes per collect round and then waits for the next
// round, so writes cluster where they race Collect() and the collector is
// not starved on a busy machine. CheckOptions::inject_loss proves that the
// comparison detects loss: the collector then drops one reported page per
// collect, and the run must end with lost_writes > 0.
//
// Scenarios:
//   writes    anonymous private memory, 4 KiB pages (MADV_NOHUGEPAGE).
//   dontneed  + MADV_DONTNEED of random runs of 1..32 pages, mostly in the
//             hot window (dropped pages read 0 and must be reported: the
//             replica must end equal to the source).
//   mprotect  + random runs of 64-page chunks toggled RW -> READ -> RW with
//             plain mprotect(2), the READ held across a collect (writers
//             skip chunks marked busy, so no write hits a READ page), and
//             mprotect(RW) of random runs in the hot window being written.
//   fork      + a fork every 25 ms; each child writes its own copy of 32
//             random pages and _exits; the parent waits for it (a child
//             stuck for 20 s or killed by a signal fails the run).
//   thp       MADV_HUGEPAGE memory, 2 MiB aligned, + every 5 ms a random
//             even-numbered huge page split by MADV_DONTNEED of one 4 KiB
//             page in it (odd-numbered ones stay whole).
//   shmem     a memfd mapped MAP_SHARED.
//   syscall   + every 50 us the kernel writes a stamp into a random hot page
//             on the program's behalf: read(2) from a pipe into tracked
//             memory (a write by copy_to_user, not by a user store). A read
//             that fails (EFAULT) fails the run: the program would break.
//   hugetlb   hugetlbfs memory (2 MiB pages, MAP_HUGETLB; the size rounded
//             up to huge pages), + every 2 ms MADV_DONTNEED of a random
//             whole huge page in the hot window (a balloon's drop: it reads
//             zero and must be reported). Needs free huge pages in the pool
//             (kNotSupported saying how to add them otherwise) and a
//             backend that tracks hugetlbfs (uffd-wp-async).
//   kvm       anonymous memory (4 KiB pages) that writer 0 writes from a
//             KVM guest: a vCPU running CPL3 code stores the stamps, so the
//             writes reach memory through KVM's fault path (get_user_pages
//             on the vCPU's behalf) while the other writers store from the
//             CPU. Needs /dev/kvm (kNotSupported saying how to get it) and
//             a userfaultfd backend (KVM's stores into PROT_READ pages fail
//             instead of faulting, so the mprotect backend cannot track it).
// In every scenario a quarter of the region (of its huge pages, for thp and
// hugetlb) is left never touched before Track() (unpopulated page tables),
// so first writes to empty ptes count too.
// The scenario's own mprotect/madvise calls are plain libc calls, like a
// user program's, not calls through pagewise's kernel seam.
//
// Thread safety: RunCheck() may be called from any thread; it creates and
// joins its own threads and collects on the calling thread. With the
// mprotect backend only one run at a time per process (one mprotect tracker
// per process). CheckOptions/CheckResult are plain values.
#ifndef PAGEWISE_CHECK_H_
#define PAGEWISE_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/status.h"
#include "pagewise/time.h"
#include "pagewise/tracker.h"

namespace pagewise {
PAGEWISE_API_BEGIN

enum class CheckScenario {
  kWrites,
  kDontneed,
  kMprotect,
  kFork,
  kThp,
  kShmem,
  kSyscall,
  kHugetlb,
  kKvm
};

// "writes", "dontneed", "mprotect", "fork", "thp", "shmem", "syscall",
// "hugetlb", "kvm".
std::string_view ScenarioName(CheckScenario scenario);
// OK if `backend` (a concrete one) can track `scenario`'s memory at all;
// kNotSupported with the reason if it never can (hugetlb: only
// uffd-wp-async tracks hugetlbfs; kvm: the mprotect backend cannot see
// KVM's writes). Says nothing about this machine (see RunCheck).
Status CheckApplies(TrackBackend backend, CheckScenario scenario);
// Every scenario, in the order `all` runs them.
std::vector<CheckScenario> AllScenarios();
// Parses one scenario name, or "all" (every scenario). Unknown names get
// kInvalidArgument listing the valid ones.
Result<std::vector<CheckScenario>> ParseScenarios(std::string_view name);

// What the engine reports while it runs (for progress lines).
struct CheckProgress {
  uint64_t elapsed_ns = 0;
  uint64_t total_ns = 0;
  uint64_t rounds = 0;
  uint64_t writes = 0;
};

struct CheckOptions {
  TrackBackend backend = TrackBackend::kAuto;
  int threads = 8;                              // writer threads, 1..254
  Duration duration = std::chrono::seconds(5);  // writing time, > 0 and at most a day
  uint64_t size = 256ull << 20;  // region bytes (rounded up to pages; to 2 MiB for thp)
  CheckScenario scenario = CheckScenario::kWrites;
  uint64_t seed = 0;  // 0: derived from the clock

  // Self-test: the collector drops one reported page per collect (never
  // copies it). A correct checker must then report lost_writes > 0.
  bool inject_loss = false;

  // Creates the tracker for the run; unset: Tracker::Create({backend}).
  // Tests use it to check the engine against a reference or broken tracker.
  std::function<Result<std::unique_ptr<Tracker>>()> make_tracker;

  // Called from the collector thread about four times a second. Optional.
  std::function<void(const CheckProgress&)> progress;
};

struct CheckResult {
  std::string backend;  // concrete backend name (never "auto")
  std::string scenario;
  uint64_t rounds = 0;          // collects done, the final one included
  uint64_t writes = 0;          // stamped writes by the writer threads
  uint64_t pages_compared = 0;  // pages of the region compared at the end
  uint64_t lost_writes = 0;     // pages where replica and source differ
  uint64_t pages_reported = 0;  // sum of pages over every collect's report
  uint64_t scenario_ops = 0;    // madvise/mprotect/fork/split actions done
  uint64_t region_bytes = 0;
  uint64_t elapsed_ns = 0;  // wall time of the tracked phase
  bool ok = false;          // lost_writes == 0 and nothing else failed
  // Up to a few lost pages described (offset, which write the source holds
  // and the replica lacks); empty when nothing was lost.
  std::vector<std::string> lost_examples;
};

// kInvalidArgument naming the bad field (threads, duration, size), else OK.
// RunCheck() calls it first; callers may call it to fail early.
Status ValidateCheckOptions(const CheckOptions& options);

// Runs one check. Returns kInvalidArgument for bad options, kNotSupported if
// the backend is unavailable here or cannot track the scenario's memory, and
// other errors if a tracker call, a mapping or the scenario's own system
// calls fail (the message says which, after the run's threads are joined).
// Lost writes are not an error Status: they come back as a result with
// ok == false and lost_writes > 0.
Result<CheckResult> RunCheck(const CheckOptions& options);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_CHECK_H_
