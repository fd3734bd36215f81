// Per-space state of the restore engine: one Space per address space (mm)
// it serves, with its userfaultfd, its SpaceMap, its FillGate, the faults
// read but not yet served, the fills in flight and its scheduling state.
//
// FillGate is the engine's ordering rule made into a type: any number of
// fills (UFFDIO_COPY/ZEROPAGE/POISON and their page-map updates) may run at
// once, but a read of the userfaultfd runs alone. Why (see engine.h,
// "Ordering"): the kernel lets the thread behind a REMOVE/UNMAP/REMAP/FORK
// event go on as soon as its message is read; a fill validated against
// the map before that read but issued after it could land after the zap
// and resurrect source data. With reads exclusive, every fill is validated
// and issued either entirely before a read or entirely after the events it
// returned were applied to the map. The gate prefers readers: a waiting
// read blocks new fills, so background fill can delay a read by at most
// one ioctl per filling thread.
//
// Thread safety: FillGate is safe from any thread. Space fields say what
// guards them; the lock order is Space::gate, then Space::mu, then the
// engine's own locks.
#ifndef PAGEWISE_RESTORE_ENGINE_SPACE_H_
#define PAGEWISE_RESTORE_ENGINE_SPACE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "restore/engine_schedule.h"
#include "restore/space_map.h"
#include "sys/env.h"
#include "sys/userfaultfd.h"

namespace pagewise::restore {

using Clock = std::chrono::steady_clock;

class FillGate {
 public:
  // A fill enters shared; blocks while a read waits or runs.
  void EnterFill();
  void ExitFill();
  // A read enters exclusive: waits for the fills inside to leave, blocks
  // new ones. Returns true if it had to wait for a fill (the background
  // filler shrinks its ioctls when reads keep waiting for it).
  bool EnterRead();
  void ExitRead();
  // True while a read waits or runs (a filler between two ioctls yields).
  bool read_pending() const { return read_pending_.load(std::memory_order_relaxed) > 0; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int fills_ = 0;         // guarded by mu_
  int readers_ = 0;       // guarded by mu_: waiting or reading
  bool reading_ = false;  // guarded by mu_
  std::atomic<int> read_pending_{0};
};

// Holds the gate shared for a scope.
class FillHold {
 public:
  explicit FillHold(FillGate& g) : g_(g) { g_.EnterFill(); }
  ~FillHold() {
    if (held_) g_.ExitFill();
  }
  FillHold(const FillHold&) = delete;
  FillHold& operator=(const FillHold&) = delete;
  // Leaves and re-enters (to read events, back off or yield to a read).
  void Release() {
    if (held_) g_.ExitFill();
    held_ = false;
  }
  void Reacquire() {
    if (!held_) g_.EnterFill();
    held_ = true;
  }

 private:
  FillGate& g_;
  bool held_ = true;
};

// A page-fault message read from the userfaultfd, not yet served.
struct QueuedFault {
  UffdEvent event;
  Clock::time_point read_at;
};

// Pages a filler is installing right now (between validation and the
// ioctl's return). Only exists while that filler holds the gate, so event
// application never sees one.
struct InFlight {
  uint64_t addr = 0;
  size_t pages = 0;
  int owner = 0;  // which filler (FillerId)
};

struct Space {
  uint32_t id = 0;
  FillGate gate;
  std::mutex mu;
  std::condition_variable inflight_done;  // with mu: an InFlight range ended
  // The fd is valid until closed; it is closed only by the loop thread
  // holding the gate exclusive and mu, so a fill holding the gate (or
  // anyone holding mu) may use it.
  sys::Userfaultfd uffd;
  SpaceMap map;                       // guarded by mu
  bool dead = false;                  // guarded by mu: the mm is gone
  bool released = false;              // guarded by mu: uffd closed after completion
  std::deque<QueuedFault> faults;     // guarded by mu: read, not yet served
  std::vector<InFlight> inflight;     // guarded by mu
  SpaceSchedule sched;                // guarded by mu
  std::atomic<uint64_t> unfilled{0};  // mirror of map.unfilled() (written under mu)
  std::atomic<uint64_t> bad{0};       // mirror of map.bad()
  std::atomic<bool> closed{false};    // dead or released (written under mu)

  // Requires mu. True if [addr, addr + pages) overlaps a range in flight
  // by a filler other than `self` (-1: any).
  bool InFlightOverlaps(uint64_t addr, size_t pages, size_t page_size, int self = -1) const;
  // Requires mu: refreshes the atomics after map changes.
  void Sync() {
    unfilled.store(map.unfilled());
    bad.store(map.bad());
  }
};
using SpacePtr = std::shared_ptr<Space>;

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_SPACE_H_
