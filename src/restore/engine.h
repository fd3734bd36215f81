// Engine: serves the userfaultfds of one restore from a PageSource. Used by
// the in-process LazyRestore, by PageServer (one engine per client) and by
// daemons that receive userfaultfds from elsewhere (CRIU's lazy pages: one
// engine per restored task).
//
// ---- Internal API (for the restore front ends) ------------------------------
//   Engine(source, options)   nothing runs yet
//   AddSpace(uffd, regions)   a root address space: its userfaultfd (already
//                             through UFFDIO_API; regions registered in
//                             MISSING mode by whoever owns the memory) and
//                             where its regions' bytes are in the source
//   Start(setup)              starts the threads; `setup` runs on the loop
//                             thread first (in-process: creates the uffd in
//                             the private fd table and calls AddSpace)
//   WaitResident / WaitPrefetched / Stats / Trace / status
//   EnableBackground          turns background fill on later
//   Stop                      stops both threads, closes every uffd
// The source is read with PageSource::Read from the filler threads, never
// under a lock a fault needs; a remote source may be slow.
//
// ---- Parts ------------------------------------------------------------------
//   engine_space.h     per-space state: uffd, SpaceMap, FillGate, queues
//   engine_install.h   Installer: how bytes become pages (the fill ioctls,
//                      granularity, the kernel's answers)
//   engine_schedule.h  Scheduler: what to fill when (demand windows, stream
//                      read-ahead, prefetch list, background order)
//   engine_events.cc   reading a space's uffd, applying FORK/REMAP/REMOVE/UNMAP
//   engine_fork.h      ForkMode: the fork guard's state machine
//   engine_stats.h     StatsRecorder: counters, histograms, trace
//   engine_handover.h  Export/Adopt: handing spaces over to another server
//   engine_loop.cc     the loop thread: poll, read, serve demand faults
//   fill.cc            serving one fault; the background filler thread
//   engine.cc          lifecycle, waiting, residency
//
// ---- Threads ------------------------------------------------------------------
//   - the loop thread polls every space's userfaultfd (plus a wake eventfd
//     and, for a page server, the client's socket), reads messages (events
//     are applied at once) and serves page faults itself: demand is never
//     queued behind background work. A fault fills the unfilled run around
//     it inside an aligned window, faulting page first; a sequential stream
//     of faults also reads ahead;
//   - the filler thread installs the rest in batches: the prefetch list, the
//     neighbourhood after recent faults, then everything else in address
//     order. It reads the source without any lock held, then installs in
//     pieces, leaving the gate between pieces whenever a read waits and
//     shrinking its pieces while reads keep waiting for it.
// Both install into the same space at once; pieces in flight are marked so
// that nothing is installed twice and a fault on a page in flight waits
// for it.
//
// ---- Ordering (why reads of a userfaultfd exclude fills) ---------------------
// The kernel refuses fills (EAGAIN, mmap_changing) only while a
// non-cooperative event is queued and unread; as soon as the monitor reads
// REMOVE/UNMAP/REMAP/FORK, the thread that caused it goes on (zaps, unmaps,
// copies page tables). A fill validated against the SpaceMap before that
// read but issued after it could land after the zap and resurrect source
// data in a range the program dropped. So every read of a space's uffd, and
// the application of the events it returned, holds the space's FillGate
// exclusive, and every fill holds it shared from validation to the ioctl's
// return: each fill then either completes before the read (and the event
// applies to its result) or is validated after the map was updated. Faults
// are read by the loop thread, and by a filler that met EAGAIN/ENOENT
// (queued for the loop thread).
//
// ---- File descriptors (why the in-process engine has a private fd table) ----
// fork(2) copies the caller's fd table, so a child forked while a restore
// runs would hold a reference to the restore's userfaultfd. Closing ours
// would then not release the kernel context: the ranges would stay
// registered with nobody reading (the program blocks on its next fault or
// madvise), and a fork caught between copying the fd table and its FORK
// event being read would wait forever. With private_fd_table the loop
// thread unshares its fd table (CLONE_FILES) before creating the
// userfaultfd, the filler shares that table, and every userfaultfd (also
// the children's from FORK events) lives only there: the program's forks
// never see them, and closing one always releases it. Hence userfaultfds
// are opened, used and closed only on the engine's threads. The private
// table starts as a copy of the process's (sources read through the
// caller's descriptors), so until the engine stops it also holds the
// descriptors that were open at Start().
//
// fork(2) of the restored program: see engine_fork.h and fork_guard.h.
//
// Thread safety: public methods may be called from any thread except the
// engine's own threads (callbacks run on them: they must not call Stop()
// and must not fork).
// Lock order: Space::gate, Space::mu, Engine::mu_, ForkMode, StatsRecorder.
#ifndef PAGEWISE_RESTORE_ENGINE_H_
#define PAGEWISE_RESTORE_ENGINE_H_

#include <poll.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
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
#include "restore/engine_fork.h"
#include "restore/engine_handover.h"
#include "restore/engine_install.h"
#include "restore/engine_schedule.h"
#include "restore/engine_space.h"
#include "restore/engine_stats.h"
#include "restore/fork_guard.h"
#include "restore/space_map.h"
#include "sys/env.h"
#include "sys/uffd_loop.h"
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
  // > 0: at most this many spaces (the root ones plus forked children)
  // are served at once. A child beyond it is refused: every page it does
  // not have yet is poisoned (SIGBUS on access, never zeros) and its
  // userfaultfd closed (engine_events.cc, RefuseForkLocked). Bounds the
  // descriptors and page maps a page server's client can make it hold.
  size_t max_spaces = 0;
  // Called (on the loop thread, under a space's lock: keep it short) each
  // time a forked child is refused for max_spaces, with the reason.
  std::function<void(const Status&)> on_space_refused;
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

class Engine final : public ForkAware, private InstallHost {
 public:
  Engine(std::shared_ptr<const PageSource> source, EngineOptions options);
  ~Engine() override;  // Stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Adds a root space: from the setup function given to Start() (on the
  // loop thread), or before Start() when private_fd_table is false. Takes
  // the userfaultfd, whose regions must be registered in MISSING mode.
  void AddSpace(sys::Userfaultfd uffd, const std::vector<SpaceRegion>& regions);
  // Starts the loop thread, runs `setup` on it (after making its fd table
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
  // True once the loop ended by itself (client gone).
  bool finished() const;
  // The first error met (OK if none).
  Status status() const;
  RestoreStats Stats() const;
  WorkingSetTrace Trace() const;
  // True in a child process forked while this engine ran: nothing works.
  bool forked_copy() const { return forked_copy_.load(); }

  // Serve handover (engine_handover.h). Export stops both threads, wakes
  // the queued faults and hands out every live space with its state; the
  // engine then serves nothing (Stop() is still needed). Not for an
  // in-process restore. Adopt (before Start(), instead of AddSpace) takes
  // over an export: its spaces, books and start time.
  Result<EngineExport> Export();
  void Adopt(EngineExport state);

  // ForkAware (called by the fork guard in the forking thread).
  void EnterForkMode() override;
  void LeaveForkMode() override;
  void BecomeForkedCopy() override;

 private:
  // Filler identities (InFlight owners).
  static constexpr int kDemandFiller = 1;
  static constexpr int kBackgroundFiller = 2;

  // ---- the loop thread (engine_loop.cc) ------------------------------------
  class LoopHandler;  // the sys::UffdHandler the loop thread runs loop_ with
  void ServerMain(const std::function<Status()>& setup, std::promise<Status>* ready);
  // Before each poll (LoopHandler::BeforePoll): serves queued faults,
  // closes finished spaces, reports residency, registers new spaces with
  // the loop. False when the loop must end.
  bool BeforePoll();
  // Adds the open spaces the loop does not poll yet (may allocate).
  void RegisterNewSpaces();
  // Serves every queued fault of every space.
  void ServeQueued(const std::vector<SpacePtr>& spaces);
  // Closes dead spaces (and complete ones with release_when_resident);
  // returns whether any space is still open.
  bool CloseFinished(const std::vector<SpacePtr>& spaces);
  // Fork mode on the loop thread: while a fork is requested or happening,
  // messages are recorded (without allocating) instead of applied; once it
  // returned they are applied. Returns false while the loop must only read.
  bool ForkStep();
  void ApplyRecorded();
  void MaybeStartFiller();

  // ---- events (engine_events.cc) -------------------------------------------
  class SpaceSink;                            // applies one space's messages
  size_t DrainEvents(Space& s) override;      // InstallHost
  size_t DrainEventsHeld(Space& s) override;  // InstallHost
  // One message read from s, dispatched by the loop (events of a batch
  // before its faults): applied, or recorded in fork mode. Requires the
  // gate exclusive and s.mu.
  void OnMessageLocked(Space& s, const UffdEvent& e, Clock::time_point read_at);
  void ApplyEventLocked(Space& s, const UffdEvent& e);
  void AdoptForkLocked(Space& parent, int child_fd);
  // A child over max_spaces: poisons what it lacks, closes its fd.
  void RefuseForkLocked(Space& parent, int child_fd);

  // ---- filling (fill.cc) ---------------------------------------------------
  // Serves one page-fault message (loop thread).
  void ServeFault(Space& s, const QueuedFault& f);
  // A filler thread's buffers (the source's bytes and zero marks of a run).
  struct FillScratch {
    std::vector<char> data;
    std::vector<uint8_t> zero;
  };
  // Reads the source for `run` and installs what is still unfilled, page
  // `first` of the run first (no lock is held while the source is read).
  // Returns whether a read waited for one of its pieces.
  bool FillRun(Space& s, const Run& run, FillKind kind, FillScratch* scratch, size_t first, int who,
               size_t max_piece, bool yield_to_reads);
  // One slice of FillRun: one source read, one install.
  bool FillSlice(Space& s, const Run& run, FillKind kind, FillScratch* scratch, size_t first,
                 int who, size_t max_piece, bool yield_to_reads);
  void FillerLoop();
  bool FillOnce();  // one background batch; false when there is no work

  // ---- lifecycle and helpers (engine.cc) -----------------------------------
  std::vector<SpacePtr> SnapshotSpaces() const;
  SpacePtr SpaceById(uint32_t id) const;   // nullptr if there is none
  int Relocate(int fd);                    // engine threads, private fd table: fd to our range
  void Notify();                           // wakes the loop thread
  void MarkDeadLocked(Space& s) override;  // InstallHost; requires s.mu
  void CloseSpace(Space& s);               // engine threads only: closes the uffd
  void MaybeReportResident();
  void Fail(const Status& status) override;  // InstallHost
  void Backoff(int* spins) override;         // InstallHost
  void Finish(const Status& why);
  bool stopping() const;

  std::shared_ptr<const PageSource> source_;
  EngineOptions opt_;
  Env* env_;
  size_t page_size_;
  std::unordered_set<uint64_t> prefetch_set_;  // immutable after construction
  StatsRecorder stats_;
  Scheduler sched_;
  Installer installer_;
  ForkMode fork_;

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
  bool server_exited_ = false;              // guarded by mu_
  bool keep_uffds_ = false;                 // guarded by mu_: Export(): the loop leaves them open
  bool adopted_ = false;                    // Adopt() gave the start time and books
  std::atomic<bool> background_on_{false};  // the filler may go past the prefetch list
  Status status_;                           // guarded by mu_
  // Threads are held by pointer so that a forked copy (in which they do not
  // exist) can drop them without joining.
  std::unique_ptr<std::thread> server_;
  std::unique_ptr<std::thread> filler_;  // started by the loop thread; joined after it
  bool registered_for_fork_ = false;     // written before/after the threads run
  std::atomic<bool> forked_copy_{false};
  // The one userfaultfd poll loop (sys/uffd_loop.h), run by the loop
  // thread; created by Start(), destroyed by Stop() after the threads.
  std::unique_ptr<sys::UffdLoop> loop_;
  std::vector<uint32_t> looped_;  // loop thread: space ids registered with loop_
  // Fork-mode storage (loop thread only), sized before acknowledging.
  bool fork_recording_ = false;
  size_t fork_count_ = 0;
  std::vector<UffdEvent> fork_events_;
  std::vector<Space*> fork_event_space_;
  int fd_base_ = -1;                 // private fd table: lowest number for our fds (-1: keep)
  FillScratch demand_scratch_;       // loop thread only
  FillScratch fill_scratch_;         // filler thread only
  size_t filler_rr_ = 0;             // filler thread only
  size_t piece_pages_ = 0;           // filler thread only: adaptive piece size
  size_t calm_pieces_ = 0;           // filler thread only: batches no read waited for
  bool last_fill_prefetch_ = false;  // filler thread only: FillOnce's last plan was prefetch
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_H_
