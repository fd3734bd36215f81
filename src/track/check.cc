// The never-lose-a-write check engine: region setup, writer threads, the
// collector, and the final page-by-page comparison. The scenario disturbers
// live in check_scenarios.cc.
#include "pagewise/check.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "kvm/guest.h"
#include "track/check_internal.h"
#include "track/tracker_env.h"

namespace pagewise {
namespace {

using check_internal::kChildSlot;
using check_internal::kChildTag;
using check_internal::kChunkPages;
using check_internal::kSlotBytes;
using check_internal::Rng;
using check_internal::RunState;
using check_internal::StampTag;

constexpr uint64_t kHuge = 2ull << 20;

// Relaxed atomic word access to memory that other threads write concurrently
// (keeps the copy and the stamps free of C++ data races; on x86 these are
// plain loads and stores).
inline uint64_t LoadWord(char* p) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p)).load(std::memory_order_relaxed);
}
inline void StoreWord(char* p, uint64_t v) {
  std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p)).store(v, std::memory_order_relaxed);
}

void CopyPages(char* dst, char* src, size_t len) {
  for (size_t off = 0; off < len; off += 8) {
    uint64_t v = LoadWord(src + off);
    std::memcpy(dst + off, &v, 8);
  }
}

// An mmap'ed region released through its Env on destruction.
struct OwnedMapping {
  Env* env = nullptr;
  void* base = nullptr;
  size_t len = 0;
  int fd = -1;
  ~OwnedMapping() {
    // Cleanup after the run: nothing useful to do if it fails.
    if (base != nullptr) env->Munmap(base, len).IgnoreError();
    if (fd >= 0) env->Close(fd).IgnoreError();
  }
};

// Maps the scenario's kind of memory: `len` bytes at *data inside *m.
Status MapRegion(Env* env, CheckScenario scenario, size_t len, OwnedMapping* m, char** data) {
  m->env = env;
  const int prot = PROT_READ | PROT_WRITE;
  if (scenario == CheckScenario::kShmem) {
    PW_ASSIGN_OR_RETURN(m->fd, env->MemfdCreate("pagewise-check", MFD_CLOEXEC));
    PW_RETURN_IF_ERROR(env->Ftruncate(m->fd, static_cast<off_t>(len)));
    PW_ASSIGN_OR_RETURN(m->base, env->Mmap(nullptr, len, prot, MAP_SHARED, m->fd, 0));
    m->len = len;
    *data = static_cast<char*>(m->base);
    return Status::Ok();
  }
  if (scenario == CheckScenario::kHugetlb) {
    PW_RETURN_IF_ERROR(check_internal::MapHugetlb(env, len, &m->base));
    m->len = len;
    *data = static_cast<char*>(m->base);
    return Status::Ok();
  }
  const bool thp = scenario == CheckScenario::kThp;
  m->len = thp ? len + kHuge : len;
  PW_ASSIGN_OR_RETURN(m->base,
                      env->Mmap(nullptr, m->len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  uintptr_t start = reinterpret_cast<uintptr_t>(m->base);
  if (thp) start = (start + kHuge - 1) & ~(kHuge - 1);
  *data = reinterpret_cast<char*>(start);
  // THP: huge pages wanted; otherwise exact 4 KiB pages, whatever the
  // system-wide THP mode.
  return env->Madvise(*data, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

// Before Track(): fills 3 of every 4 units (pages; huge pages for thp) with
// a pattern and copies them to the replica; the 4th unit is never touched so
// its page-table entries stay empty.
void PrefillAndSnapshot(const RunState& st, char* replica) {
  const bool huge = st.scenario == CheckScenario::kThp || st.scenario == CheckScenario::kHugetlb;
  const size_t unit = huge ? st.huge : st.page;
  const size_t len = st.npages * st.page;
  for (size_t off = 0, u = 0; off < len; off += unit, ++u) {
    if (u % 4 == 3) continue;  // left unpopulated; replica stays zero there
    for (size_t w = off; w < off + unit; w += 8) {
      uint64_t v = (st.seed ^ (w / 8)) * 0x9E3779B97F4A7C15ull;
      std::memcpy(st.region + w, &v, 8);
    }
    std::memcpy(replica + off, st.region + off, unit);
  }
}

void Writer(RunState* st, int tid) {
  if (st->scenario == CheckScenario::kKvm && tid == 0) {
    check_internal::GuestWriter(st, tid);  // the guest's stores, through KVM
    return;
  }
  Rng rng(st->seed * 7919 + static_cast<uint64_t>(tid) + 1);
  const bool guarded = st->scenario == CheckScenario::kMprotect;
  const size_t slot = static_cast<size_t>(tid) * kSlotBytes;
  std::unique_ptr<check_internal::Disturber> disturber;
  if (tid == 0) disturber = std::make_unique<check_internal::Disturber>(st);
  uint64_t counter = 0;
  uint64_t this_round = 0;
  uint32_t round = st->rounds.load(std::memory_order_acquire);
  while (!st->stop.load(std::memory_order_relaxed)) {
    check_internal::WaitForNextRound(st, &this_round, &round);
    const uint64_t now = NowNs();
    if (now >= st->deadline_ns) break;
    if (disturber) {
      Status s = disturber->MaybeAct(now);
      if (!s.ok()) st->Fail(s);
    }
    const size_t window = st->WindowStart(now);
    for (int k = 0; k < 64; ++k) {
      const uint64_t p = (window + rng.Below(st->window_pages)) % st->npages;
      std::atomic<int32_t>* chunk = nullptr;
      if (guarded) {
        // Enter the chunk unless the protection toggler holds it; then the
        // page may be PROT_READ, so write elsewhere instead.
        chunk = &st->chunk_state[p / kChunkPages];
        int32_t s = chunk->load(std::memory_order_acquire);
        if (s < 0 || !chunk->compare_exchange_strong(s, s + 1, std::memory_order_acq_rel)) {
          continue;
        }
      }
      char* at = st->region + p * st->page + slot;
      StoreWord(at + 8, ++counter);
      StoreWord(at, StampTag(p, static_cast<uint64_t>(tid)));
      if (chunk != nullptr) chunk->fetch_sub(1, std::memory_order_release);
    }
    this_round += 64;
  }
  if (disturber) {
    Status s = disturber->Finish();
    if (!s.ok()) st->Fail(s);
  }
  st->writes.fetch_add(counter, std::memory_order_relaxed);
  st->writers_running.fetch_sub(1, std::memory_order_release);
}

// Describes how page `p` differs between source and replica.
std::string DescribeLoss(const RunState& st, size_t p, const char* src, const char* rep) {
  char buf[256];
  const size_t off = p * st.page;
  for (size_t t = 0; t <= check_internal::kKernelSlot; ++t) {
    const size_t s = t * kSlotBytes;
    if (std::memcmp(src + s, rep + s, kSlotBytes) == 0) continue;
    uint64_t tag, count, rtag, rcount;
    std::memcpy(&tag, src + s, 8);
    std::memcpy(&count, src + s + 8, 8);
    std::memcpy(&rtag, rep + s, 8);
    std::memcpy(&rcount, rep + s + 8, 8);
    if (tag == StampTag(p, t)) {
      char who[48];
      if (t == check_internal::kKernelSlot) {
        std::snprintf(who, sizeof who, "the kernel's read(2)");
      } else {
        std::snprintf(who, sizeof who, "writer %zu's", t);
      }
      if (rtag == StampTag(p, t)) {
        std::snprintf(buf, sizeof buf,
                      "page %zu (+0x%zx): %s write #%" PRIu64
                      " is missing from the replica, which holds its write #%" PRIu64,
                      p, off, who, count, rcount);
      } else {
        std::snprintf(buf, sizeof buf,
                      "page %zu (+0x%zx): %s write #%" PRIu64
                      " is missing from the replica, which holds no such write",
                      p, off, who, count);
      }
      return buf;
    }
  }
  bool src_zero = std::all_of(src, src + st.page, [](char c) { return c == 0; });
  bool rep_zero = std::all_of(rep, rep + st.page, [](char c) { return c == 0; });
  std::snprintf(buf, sizeof buf, "page %zu (+0x%zx): source is %s, replica is %s", p, off,
                src_zero ? "all zero (dropped)" : "non-zero",
                rep_zero ? "all zero" : "stale non-zero data");
  return buf;
}

// Compares source and replica page by page after every thread is joined.
Status Compare(const RunState& st, const char* replica, CheckResult* r) {
  for (size_t p = 0; p < st.npages; ++p) {
    const char* src = st.region + p * st.page;
    const char* rep = replica + p * st.page;
    uint64_t child_tag;
    std::memcpy(&child_tag, src + kChildSlot * kSlotBytes, 8);
    if (child_tag == kChildTag) {
      return Status::Internal(
          "a fork child's write appeared in the parent's private memory at page " +
          std::to_string(p) + "; the kernel or the tracker broke copy-on-write");
    }
    if (std::memcmp(src, rep, st.page) == 0) continue;
    ++r->lost_writes;
    if (r->lost_examples.size() < 5) r->lost_examples.push_back(DescribeLoss(st, p, src, rep));
  }
  r->pages_compared = st.npages;
  return Status::Ok();
}

// Copies the reported ranges into the replica. With inject_loss, drops the
// first reported page (self-test of the comparison).
Status CopyReported(const RunState& st, const std::vector<PageRange>& ranges, bool inject_loss,
                    char* replica, uint64_t* pages) {
  const uint64_t base = reinterpret_cast<uint64_t>(st.region);
  const uint64_t end = base + st.npages * st.page;
  bool dropped = false;
  for (const PageRange& r : ranges) {
    if (r.start < base || r.end > end || r.start >= r.end || (r.start - base) % st.page != 0 ||
        (r.end - base) % st.page != 0) {
      return Status::Internal("tracker reported [0x" + std::to_string(r.start) + ", 0x" +
                              std::to_string(r.end) +
                              ") which is not a page range of the tracked "
                              "region; this is a tracker bug");
    }
    uint64_t start = r.start;
    if (inject_loss && !dropped) {
      start += st.page;
      dropped = true;
    }
    *pages += (r.end - r.start) / st.page;
    if (start < r.end) {
      CopyPages(replica + (start - base), reinterpret_cast<char*>(start), r.end - start);
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateCheckOptions(const CheckOptions& o) {
  if (o.threads < 1 || o.threads > check_internal::kMaxThreads) {
    return Status::InvalidArgument("check: threads must be 1.." +
                                   std::to_string(check_internal::kMaxThreads) + ", got " +
                                   std::to_string(o.threads));
  }
  if (o.duration <= Duration::zero() || o.duration > std::chrono::hours(24)) {
    return Status::InvalidArgument("check: duration must be > 0 and at most 24 h, got " +
                                   std::to_string(o.duration.count()) + " ns");
  }
  if (o.size < (1ull << 20)) {
    return Status::InvalidArgument("check: size must be at least 1 MiB, got " +
                                   std::to_string(o.size) + " bytes");
  }
  const uint64_t ram = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * PageSize();
  if (o.size > ram / 2) {
    return Status::InvalidArgument(
        "check: size " + std::to_string(o.size >> 20) +
        " MiB needs twice that (source + replica) but this machine has " +
        std::to_string(ram >> 20) + " MiB; pass a smaller --size");
  }
  return Status::Ok();
}

namespace check_internal {

bool WaitForNextRound(RunState* st, uint64_t* this_round, uint32_t* round) {
  if (*this_round < st->writes_per_round) return false;
  // Quota done: wait for the collector's next round (it bumps `rounds`
  // after every collect, and keeps collecting until every writer left).
  st->rounds.wait(*round, std::memory_order_acquire);
  *round = st->rounds.load(std::memory_order_acquire);
  *this_round = 0;
  return true;
}

void RunState::Fail(const Status& status) {
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (first_error_.ok()) first_error_ = status;
  }
  stop.store(true);
}

Status RunState::first_error() const {
  std::lock_guard<std::mutex> lock(error_mu_);
  return first_error_;
}

}  // namespace check_internal

std::string_view ScenarioName(CheckScenario s) {
  switch (s) {
    case CheckScenario::kWrites:
      return "writes";
    case CheckScenario::kDontneed:
      return "dontneed";
    case CheckScenario::kMprotect:
      return "mprotect";
    case CheckScenario::kFork:
      return "fork";
    case CheckScenario::kThp:
      return "thp";
    case CheckScenario::kShmem:
      return "shmem";
    case CheckScenario::kSyscall:
      return "syscall";
    case CheckScenario::kHugetlb:
      return "hugetlb";
    case CheckScenario::kKvm:
      return "kvm";
  }
  return "unknown";
}

Status CheckApplies(TrackBackend backend, CheckScenario scenario) {
  if (scenario == CheckScenario::kHugetlb && backend != TrackBackend::kUffdWpAsync) {
    return Status::NotSupported("check hugetlb: backend " + std::string(BackendName(backend)) +
                                " cannot track hugetlbfs memory; only uffd-wp-async does");
  }
  if (scenario == CheckScenario::kKvm && backend != TrackBackend::kUffdWpAsync &&
      backend != TrackBackend::kUffdWp) {
    return Status::NotSupported("check kvm: backend " + std::string(BackendName(backend)) +
                                " cannot see a KVM guest's writes (KVM stores into memory through "
                                "the kernel, which a read-only page refuses instead of faulting); "
                                "use a userfaultfd backend");
  }
  return Status::Ok();
}

std::vector<CheckScenario> AllScenarios() {
  return {CheckScenario::kWrites,  CheckScenario::kDontneed, CheckScenario::kMprotect,
          CheckScenario::kFork,    CheckScenario::kThp,      CheckScenario::kShmem,
          CheckScenario::kSyscall, CheckScenario::kHugetlb,  CheckScenario::kKvm};
}

Result<std::vector<CheckScenario>> ParseScenarios(std::string_view name) {
  if (name == "all") return AllScenarios();
  for (CheckScenario s : AllScenarios()) {
    if (name == ScenarioName(s)) return std::vector<CheckScenario>{s};
  }
  return Status::InvalidArgument("unknown check scenario '" + std::string(name) +
                                 "'; valid: writes, dontneed, mprotect, fork, thp, shmem, syscall, "
                                 "hugetlb, kvm, all");
}

// Longer than our ~80 lines: the setup, the writer threads and the
// collector loop share one RunState on this frame, and the rule for the
// final round (after every writer finished) reads best beside the loop.
Result<CheckResult> RunCheck(const CheckOptions& options) {
  PW_RETURN_IF_ERROR(ValidateCheckOptions(options));
  Env* env = Env::Default();

  RunState st;
  st.scenario = options.scenario;
  st.page = PageSize();
  st.seed = options.seed != 0 ? options.seed : NowNs() | 1;
  uint64_t len = (options.size + st.page - 1) / st.page * st.page;
  if (st.scenario == CheckScenario::kThp || st.scenario == CheckScenario::kHugetlb) {
    len = (len + kHuge - 1) / kHuge * kHuge;
  }
  st.npages = len / st.page;
  st.window_pages = std::min<size_t>(st.npages, std::max<size_t>(256, st.npages / 8));
  st.writes_per_round =
      std::max<uint64_t>(256, st.window_pages / 4 / static_cast<uint64_t>(options.threads));

  std::unique_ptr<Tracker> tracker;
  if (options.make_tracker) {
    PW_ASSIGN_OR_RETURN(tracker, options.make_tracker());
  } else {
    PW_ASSIGN_OR_RETURN(tracker, CreateTracker({options.backend}, env));
  }
  // A caller's own tracker (make_tracker) is its business; a backend's is checked.
  if (!options.make_tracker) PW_RETURN_IF_ERROR(CheckApplies(tracker->backend(), st.scenario));

  OwnedMapping source, replica_map;
  PW_RETURN_IF_ERROR(MapRegion(env, st.scenario, len, &source, &st.region));
  PW_ASSIGN_OR_RETURN(replica_map.base, env->Mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  replica_map.env = env;
  replica_map.len = len;
  char* replica = static_cast<char*>(replica_map.base);
  PrefillAndSnapshot(st, replica);
  if (st.scenario == CheckScenario::kMprotect) {
    st.nchunks = (st.npages + kChunkPages - 1) / kChunkPages;
    st.chunk_state = std::make_unique<std::atomic<int32_t>[]>(st.nchunks);
  }

  std::unique_ptr<kvm::Guest> guest;  // kvm: writer 0's stores go through it
  if (st.scenario == CheckScenario::kKvm) {
    PW_ASSIGN_OR_RETURN(guest, check_internal::MakeCheckGuest(&st));
  }

  PW_RETURN_IF_ERROR(tracker->Track(st.region, len).WithContext("check: Track"));

  CheckResult result;
  result.backend = std::string(BackendName(tracker->backend()));
  result.scenario = std::string(ScenarioName(st.scenario));
  result.region_bytes = len;

  const uint64_t t0 = NowNs();
  st.start_ns = t0;
  st.deadline_ns = t0 + static_cast<uint64_t>(options.duration.count());
  st.writers_running.store(options.threads);
  std::vector<std::thread> threads;
  for (int t = 0; t < options.threads; ++t) threads.emplace_back(Writer, &st, t);

  // The collector (this thread) runs until every writer (writer 0 hosts the
  // disturber) has finished; the round that starts after that is the final one.
  std::vector<PageRange> ranges;
  uint64_t next_progress = t0 + 250000000ull;
  for (;;) {
    const bool last = st.writers_running.load(std::memory_order_acquire) == 0;
    ranges.clear();
    Status s = tracker->Collect(&ranges);
    // Pages in `ranges` were re-armed even if Collect failed: copy them first.
    Status c = CopyReported(st, ranges, options.inject_loss, replica, &result.pages_reported);
    ++result.rounds;
    st.rounds.fetch_add(1, std::memory_order_acq_rel);
    st.rounds.notify_all();
    if (!s.ok()) st.Fail(s.WithContext("check: Collect round " + std::to_string(result.rounds)));
    if (!c.ok()) st.Fail(c);
    if (last) break;
    if (options.progress && NowNs() >= next_progress) {
      next_progress += 250000000ull;
      options.progress({NowNs() - t0, static_cast<uint64_t>(options.duration.count()),
                        result.rounds, st.writes.load(std::memory_order_relaxed)});
    }
  }
  for (std::thread& t : threads) t.join();
  result.elapsed_ns = NowNs() - t0;
  result.writes = st.writes.load();
  result.scenario_ops = st.scenario_ops.load();

  PW_RETURN_IF_ERROR(st.first_error());
  PW_RETURN_IF_ERROR(Compare(st, replica, &result));
  PW_RETURN_IF_ERROR(tracker->Untrack(st.region, len).WithContext("check: Untrack"));
  result.ok = result.lost_writes == 0;
  return result;
}

}  // namespace pagewise
