// Controller: runs one schedule of a race, one actor step at a time, on the
// real kernel.
//
// Actors are threads. Program actors (the restored or tracked program's
// threads) are started here and run a script of steps (a fork, an mremap,
// a write, a Tracker::Collect...), parking before each one, and also at
// the race's stops inside pagewise code they call. pagewise's own threads
// (the restore engine's loop and filler, a tracker's fault thread) become
// actors when they reach their "<role>.start" pause point
// (base/pause_point.h), and park at every pause point the race names as a
// stop; other points pass.
//
// Step(actor) lets one parked actor go and then waits until the process is
// quiet again: every actor is parked, done, or blocked in the kernel. That
// last state is how the kernel's own blocking points become steps: a
// thread that faults on a missing page sleeps in handle_userfault until the
// page is installed; a thread whose madvise/munmap/mremap/fork raised a
// non-cooperative event sleeps in userfaultfd_event_wait_completion until
// the monitor read it; a filler whose UFFDIO_COPY faults on a gated source
// page sleeps in handle_userfault mid-batch. The controller sees these from
// /proc/self/task/<tid>/{stat,wchan,schedstat} (sys/task.h): a thread
// counts as blocked when it sleeps in one of the kernel's blocking
// functions (futex, poll, userfaultfd waits, waitpid) and has not run
// between two samples. Everything a released step wakes (a thread whose
// event was read, a thread waiting for a lock the step released) runs to
// its own next park or block before the next step starts, so a schedule is
// the sequence of actors released, and replaying it gives the same run.
//
// Thread safety: the public methods are for the one thread that runs the
// schedule; Reached() is called by pagewise's threads. A forked child must
// never call into the controller (it holds a copy of it).
#ifndef PAGEWISE_EXPLORE_CONTROLLER_H_
#define PAGEWISE_EXPLORE_CONTROLLER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/pause_point.h"
#include "pagewise/status.h"

namespace pagewise::explore {

// One step of a program actor, run on the actor's thread.
struct ProgramStep {
  std::string label;
  std::function<void()> run;
};

class Controller final : public pause::PauseListener {
 public:
  // Pause points that park a registered thread (others pass).
  explicit Controller(std::set<std::string> stops);
  ~Controller() override;  // FreeRun(), joins the program threads
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Starts a program actor; it parks before its first step. Call before
  // Attach().
  int AddProgram(const std::string& name, std::vector<ProgramStep> steps);
  // Starts a worker actor (a monitor's event reader, a filler) whose steps
  // its own logic picks: `next` (called on the exploring thread while the
  // worker is parked) names its next step, or nullopt when it has nothing to
  // do now; `run` (on the worker's thread) takes that step. A worker never
  // finishes by itself: after FreeRun() its thread ends without running
  // more (the race's final phase takes over its work). Call before Attach().
  int AddWorker(const std::string& name, std::function<std::optional<std::string>()> next,
                std::function<void()> run);
  // Installs this controller as the process's pause listener.
  void Attach();

  // Releases each role in `release` once (in order, each waited for at its
  // start point), then waits until every role in `expect` has registered
  // (they stay parked at their start point: releasing them is a step of
  // the schedule) and the process is quiet. The schedule's trace starts
  // after this. Error if a role does not show up.
  Status Prologue(const std::vector<std::string>& release, const std::vector<std::string>& expect);

  // Actors that can take a step now (parked with something to do), in id
  // order. Requires quiet (after Prologue/Step).
  std::vector<int> Enabled();
  // Releases `actor` (which must be enabled) for one step and waits until
  // quiet. Error if the process does not settle (a thread keeps running:
  // a livelock without pause points) within the controller's patience.
  Status Step(int actor);

  // From now on no point parks and program actors run their remaining
  // steps without waiting. Idempotent.
  void FreeRun();
  // After FreeRun: waits until every program actor finished its script.
  // False if they did not within timeout_ns (a program thread hangs).
  bool WaitProgramsDone(int64_t timeout_ns);
  // Names of the program actors that have not finished, with where they are.
  std::string Unfinished() const;
  // Removes this controller as the pause listener (FreeRun first; call when
  // no pagewise thread of the run is left).
  void Detach();

  const std::string& name(int actor) const;
  size_t actors() const;
  // Where each actor is: "parked at P", "before step S", "blocked in W", "done".
  std::string Where(int actor) const;
  // One line per step taken: who went, and where everyone that moved ended.
  const std::vector<std::string>& trace() const { return trace_; }

  // PauseListener.
  void Reached(const char* point) override;

 private:
  enum Phase : uint32_t { kRunning = 0, kParked = 1, kDone = 2 };
  struct Actor {
    std::string name;
    bool program = false;
    std::atomic<pid_t> tid{0};
    std::atomic<uint32_t> go{0};     // bumped by the controller: futex word
    std::atomic<uint32_t> acked{0};  // the go value the actor last woke for
    std::atomic<uint32_t> phase{kRunning};
    // Parked at this pause point (nullptr: a program actor before a step).
    std::atomic<const char*> point{nullptr};
    std::vector<ProgramStep> steps;  // program actors
    std::atomic<size_t> next{0};     // next step index
    // Worker actors (AddWorker): `label` is what next_fn last named
    // (exploring thread only).
    bool worker = false;
    std::function<std::optional<std::string>()> next_fn;
    std::function<void()> run_fn;
    std::string label;
    std::thread thread;
  };

  // Adds a program or worker actor and starts its thread; returns its id.
  int StartActor(std::unique_ptr<Actor> a);
  Actor* FindByTid(pid_t tid) const;
  Actor* Register(pid_t tid, const char* point);
  // On the actor's thread: park until released (or free run).
  void Park(Actor* a, const char* point);
  void ProgramMain(Actor* a);
  // Waits until every actor is parked, done or blocked in the kernel.
  Status WaitQuiet();
  std::vector<std::string> Snapshot() const;  // Where() of every actor
  void Bump();

  const std::set<std::string> stops_;
  mutable std::mutex mu_;                      // guards actors_ (the deque's shape)
  std::deque<std::unique_ptr<Actor>> actors_;  // stable addresses
  std::atomic<bool> free_{false};
  std::atomic<uint32_t> progress_{0};  // bumped on every park/finish: futex word
  std::vector<std::string> trace_;
  bool attached_ = false;
};

}  // namespace pagewise::explore

#endif  // PAGEWISE_EXPLORE_CONTROLLER_H_
