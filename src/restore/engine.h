// Engine: serves userfaultfds of one restore from a PageSource.
//
// An Engine owns one or more address spaces ("spaces": one per mm, each with
// its userfaultfd and SpaceMap): the restored program, plus every child the
// kernel reports with UFFD_EVENT_FORK. Two threads:
//   - the server thread polls every space's userfaultfd (plus a wake eventfd
//     and, for a page server, the client's socket), reads messages, applies
//     the non-cooperative events (FORK, REMAP, REMOVE, UNMAP) and serves
//     page faults: the contiguous run of unfilled pages around the fault,
//     inside an aligned window, with UFFDIO_COPY (UFFDIO_ZEROPAGE for zero
//     pages);
//   - the filler thread installs the remaining pages in batches: first the
//     prefetch list (a recorded working set), then the neighbourhood after
//     recent faults, then everything else in address order.
//
// Ordering invariant (why every ioctl and every read of a userfaultfd is
// made under the space's mutex): the kernel lets a fill run concurrently
// with an madvise/munmap/mremap that has not yet queued its event, and
// lets the event's thread finish the change as soon as its message is
// read. If a fill were in flight while another thread read a REMOVE, the
// fill could land after the zap and resurrect source data in a range the
// program dropped. With reads and fills serialised per space, every fill
// either completes before the event is read (and the change then applies
// to its result) or starts after it (and sees the updated SpaceMap).
// Source reads (which may decompress) happen outside the mutex; the run is
// re-validated page by page before it is installed.
//
// File descriptors (why the userfaultfds live in a private fd table for an
// in-process restore): fork(2) copies the caller's fd table, so a child
// forked while a restore runs would hold a reference to the restore's
// userfaultfd. Closing ours would then not release the kernel context: the
// ranges would stay registered with nobody reading (the program blocks on
// its next fault or madvise), and a fork caught between copying the fd
// table and its FORK event being read would wait forever. With
// private_fd_table the server thread unshares its fd table (CLONE_FILES)
// before creating the userfaultfd, the filler thread shares that table, and
// every userfaultfd (also the children's from FORK events) lives only
// there: the program's forks never see them, and closing one always
// releases it. Hence userfaultfds are opened, used and closed only on the
// engine's threads. The private table starts as a copy of the process's
// (sources read through the caller's descriptors), so until the engine
// stops it also holds the descriptors that were open at Start().
//
// fork(2) of the restored program: see restore/fork_guard.h. An engine with
// private_fd_table (in-process) registers with the fork guard: around a
// fork its filler parks and its server thread only reads messages, into
// preallocated storage, so that it never blocks on a lock glibc holds
// across fork.
//
// Thread safety: public methods may be called from any thread except the
// engine's own threads (callbacks run on them: they must not call Stop()
// and must not fork).
// Lock order: Space::mu, then Engine::mu_, then Engine::stats_mu_.
#ifndef PAGEWISE_RESTORE_ENGINE_H_
#define PAGEWISE_RESTORE_ENGINE_H_

#include <poll.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "pagewise/restore.h"
#include "pagewise/status.h"
#include "pagewise/time.h"
#include "restore/fork_guard.h"
#include "restore/space_map.h"
#include "sys/env.h"
#include "sys/userfaultfd.h"

namespace pagewise::restore {

struct EngineOptions {
  Env* env = nullptr;
  // Validated by the caller (ValidateFillPolicy). wait_for_prefetch is the
  // caller's business (WaitPrefetched).
  FillPolicy fill;
  // Close a space's userfaultfd once all its pages are in place (in-process
  // restore). A page server keeps serving until the client goes away.
  bool release_when_resident = false;
  // Run the engine's threads with their own fd table (see above). The
  // userfaultfds must then be created by the setup function given to Start().
  bool private_fd_table = false;
  // A socket to watch (not owned): end of stream or an error on it means
  // the client is gone and the engine stops serving.
  int watch_fd = -1;
  // Called once when every space is resident (or failed); no locks held.
  std::function<void(const Status&, const RestoreStats&)> on_resident;
  // Called once when the engine stopped serving by itself (client gone, all
  // spaces gone); no locks held.
  std::function<void(const Status&)> on_finished;
  // Called once, on the filler thread with no locks held, when the
  // prefetch list is installed (pages the program had already faulted in
  // count as installed). Only when `fill.prefetch` is not empty.
  std::function<void()> on_prefetched;
};

// One region of a space: [addr, addr+len) backed by flat source offset src.
struct SpaceRegion {
  uint64_t addr = 0;
  uint64_t len = 0;
  uint64_t src = 0;
};

class Engine final : public ForkAware {
 public:
  Engine(std::shared_ptr<const PageSource> source, EngineOptions options);
  ~Engine() override;  // Stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Adds a root space: from the setup function given to Start() (on the
  // server thread), or before Start() when private_fd_table is false. Takes
  // the userfaultfd, whose regions must be registered in MISSING mode.
  void AddSpace(sys::Userfaultfd uffd, const std::vector<SpaceRegion>& regions);
  // Starts the server thread, runs `setup` on it (after making its fd table
  // private, if asked), then starts serving (and the filler, if
  // background_fill). Returns setup's error, if any; the engine is then
  // stopped.
  Status Start(std::function<Status()> setup = nullptr);
  // Starts the filler if it is not running (used to finish a restore that
  // was started without background fill).
  void EnableBackground();
  // Stops both threads and closes every userfaultfd. Idempotent.
  void Stop();

  // See LazyRestore::WaitResident.
  Status WaitResident(Duration timeout);
  // Waits until the prefetch list has been installed (or there is nothing to
  // prefetch, no filler, or the restore ended). OK, or kTimeout after
  // `timeout` (kNoTimeout: no limit).
  Status WaitPrefetched(Duration timeout);
  bool resident() const;
  // True once the server loop ended by itself (client gone).
  bool finished() const;
  // The first error met (OK if none).
  Status status() const;
  RestoreStats Stats() const;
  WorkingSetTrace Trace() const;
  // True in a child process forked while this engine ran: nothing works.
  bool forked_copy() const { return forked_copy_.load(); }

  // ForkAware (called by the fork guard in the forking thread).
  void EnterForkMode() override;
  void LeaveForkMode() override;
  void BecomeForkedCopy() override;

 private:
  // kRequested: a fork is about to happen or happening (threads parked,
  // server reading only). kApplying: fork returned; the server applies what
  // it read while the filler stays parked (the parent must not be filled
  // before a buffered FORK event has copied its map for the child).
  enum class ForkPhase { kNone, kRequested, kApplying };
  enum class FillKind { kDemand, kBackground, kPrefetch };
  using Clock = std::chrono::steady_clock;

  struct QueuedFault {
    UffdEvent event;
    Clock::time_point read_at;
  };

  struct Space {
    uint32_t id = 0;
    std::mutex mu;
    sys::Userfaultfd uffd;              // guarded by mu; closed only by the server thread
    SpaceMap map;                       // guarded by mu
    bool dead = false;                  // guarded by mu: the mm is gone
    bool released = false;              // guarded by mu: uffd closed after completion
    std::deque<QueuedFault> faults;     // guarded by mu: read, not yet served
    std::deque<uint64_t> hints;         // guarded by mu: addresses after recent faults
    uint64_t cursor = 0;                // guarded by mu: sequential fill position
    size_t prefetch_pos = 0;            // guarded by mu
    std::atomic<uint64_t> unfilled{0};  // mirror of map.unfilled() (written under mu)
    std::atomic<uint64_t> bad{0};       // mirror of map.bad()
    std::atomic<bool> closed{false};    // dead or released (written under mu)
  };
  using SpacePtr = std::shared_ptr<Space>;

  // ---- threads (engine.cc) -------------------------------------------------
  void ServerMain(const std::function<Status()>& setup, std::promise<Status>* ready);
  void ServerLoop();
  void MaybeStartFiller();  // server thread: starts the filler when wanted
  // Server thread: acknowledges fork mode, reads messages without
  // allocating until it ends, then applies them.
  void ForkModeLoop();
  // Filler: parks while a fork is in progress.
  void ParkForFork();
  void FillerLoop();
  void Notify();  // wakes the server thread
  std::vector<SpacePtr> SnapshotSpaces() const;
  // Reads every pending message of s: applies events, queues faults.
  // Returns how many messages were read. Requires s.mu held.
  size_t DrainLocked(Space& s);
  void ApplyEventLocked(Space& s, const UffdEvent& e);
  void AdoptForkLocked(Space& parent, int child_fd);
  void SyncLocked(Space& s);  // refreshes the atomics after map changes
  // Engine threads, private fd table: moves fd to this engine's high range.
  int Relocate(int fd);
  void MarkDeadLocked(Space& s, const char* why);
  void CloseSpace(Space& s);  // engine threads only: closes the uffd
  void MaybeReportResident();
  void Fail(const Status& status);
  void Finish(const Status& why);

  // ---- filling (fill.cc) ---------------------------------------------------
  // Serves one page-fault message.
  void ServeFault(Space& s, const QueuedFault& f);
  // Reads the source for `run` and installs what is still unfilled.
  void FillRun(Space& s, const Run& run, FillKind kind, std::vector<char>* buf);
  // Installs run pages that are still unfilled with the same source offset.
  // `data` holds the run's bytes; zero[i] marks pages to install as zero.
  void InstallLocked(Space& s, std::unique_lock<std::mutex>& lock, const Run& run, const char* data,
                     const std::vector<uint8_t>& zero, FillKind kind);
  // Handles a fault on a page we do not fill from the source. Returns true
  // if events were applied meanwhile and the caller must look again.
  bool ZeroOrWakeLocked(Space& s, std::unique_lock<std::mutex>& lock, uint64_t page);
  // Poisons a page the source could not give (SIGBUS on access). Returns
  // true if the caller must look again.
  bool PoisonLocked(Space& s, std::unique_lock<std::mutex>& lock, uint64_t page);
  // How many unexplained ENOENTs to wait out before forgetting a page.
  int EnoentPatience(const Space& s) const;
  // Backs off after an EAGAIN that draining did not explain.
  void EagainBackoff(std::unique_lock<std::mutex>& lock, int* spins);
  // Plans a background batch for s. Requires s.mu.
  std::vector<Run> PlanLocked(Space& s, FillKind* kind);
  bool FillOnce();  // one background batch; false when there is no work
  void AddStats(FillKind kind, bool zero, uint64_t pages);

  std::shared_ptr<const PageSource> source_;
  EngineOptions opt_;
  Env* env_;
  size_t page_size_;
  std::unordered_set<uint64_t> prefetch_set_;  // immutable after construction

  mutable std::mutex mu_;
  std::condition_variable cv_;              // filler work, residency
  std::vector<SpacePtr> spaces_;            // guarded by mu_
  uint32_t next_id_ = 0;                    // guarded by mu_
  uint64_t work_epoch_ = 0;                 // guarded by mu_: bumped when work appears
  bool stopping_ = false;                   // guarded by mu_
  bool resident_ = false;                   // guarded by mu_
  bool resident_reported_ = false;          // guarded by mu_
  bool finished_ = false;                   // guarded by mu_
  bool started_ = false;                    // guarded by mu_
  bool want_filler_ = false;                // guarded by mu_
  bool prefetch_done_ = false;              // guarded by mu_: the prefetch list is installed
  std::atomic<bool> background_on_{false};  // the filler may go past the prefetch list
  Status status_;                           // guarded by mu_
  // Threads are held by pointer so that a forked copy (in which they do not
  // exist) can drop them without joining.
  std::unique_ptr<std::thread> server_;
  std::unique_ptr<std::thread> filler_;      // started by the server thread; joined after it
  bool filler_running_ = false;              // guarded by mu_
  bool server_exited_ = false;               // guarded by mu_
  ForkPhase fork_phase_ = ForkPhase::kNone;  // guarded by mu_
  bool server_parked_ = false;               // guarded by mu_
  bool filler_parked_ = false;               // guarded by mu_
  bool registered_for_fork_ = false;         // written before/after the threads run
  std::atomic<bool> forked_copy_{false};
  // Fork-mode storage (server thread only), sized before acknowledging.
  std::vector<struct pollfd> fork_pfds_;
  std::vector<SpacePtr> fork_polled_;
  std::vector<UffdEvent> fork_events_;
  std::vector<Space*> fork_event_space_;
  int wake_fd_ = -1;
  int fd_base_ = -1;  // private fd table: lowest number for our fds (-1: keep)
  Clock::time_point start_;
  std::vector<char> demand_buf_;     // server thread only
  std::vector<char> fill_buf_;       // filler thread only
  size_t filler_rr_ = 0;             // filler thread only
  bool last_fill_prefetch_ = false;  // filler thread only: FillOnce's last plan was prefetch

  mutable std::mutex stats_mu_;
  RestoreStats stats_;                   // guarded by stats_mu_
  std::vector<TraceEntry> trace_;        // guarded by stats_mu_
  std::unordered_set<uint64_t> traced_;  // guarded by stats_mu_
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_H_
