// UffdWorld: fresh memory for one schedule of a restore race, served by
// pagewise's own restore engine (restore::Engine, options.engine) or by the
// explorer's reference monitor, which follows the same rules (internal to
// src/explore/).
//
// With options.engine the region is handed to a real restore::Engine (one
// space, a MemorySource over the source buffer, so its COPYs read the
// source in place like a mapped memory file). Its loop and filler threads
// join the schedule at their pause points (engine.loop.start,
// engine.filler.start) and park at engine.loop.read (before a read of the
// userfaultfd), engine.fill.ioctl (a piece validated, before its ioctl)
// and engine.drain.read (a filler reading events after EAGAIN/ENOENT):
// those and the kernel's own blocking points are the schedule's steps. The
// reference monitor below is used for what the engine never does (MOVE).
//
// A region of `pages` private anonymous pages is registered with a
// userfaultfd in MISSING mode with the non-cooperative events (FORK, REMAP,
// REMOVE, UNMAP). Source page i holds a pattern naming i (or zeros, for the
// pages listed in `zero_pages`). Two worker actors serve it the way the
// restore engine does:
//   - the reader (the engine's event loop): one step reads one message and
//     applies it; a page fault is served at once (COPY, ZEROPAGE for a zero
//     or dropped page, WAKE for a page already there);
//   - the filler (the engine's background filler): one step installs the
//     next run of missing pages (COPY, ZEROPAGE or MOVE, one batch).
// Both follow the kernel's rules: EAGAIN means a non-cooperative event is
// pending (mmap_changing): read every pending event first, then retry only
// what is still missing, in the next step (the retry is its own step, so
// the program thread the read released finishes first); EEXIST means the
// page is there. FORK gives the child its own userfaultfd and a page map
// copied from the parent's when the event is read; REMAP moves the map;
// REMOVE marks pages dropped (they read zero from now on); UNMAP forgets
// them. Source pages listed in `gated` sit behind a second userfaultfd: a
// COPY from such a page blocks mid-batch (the kernel faults on the source
// with the mm's lock dropped) until the gate actor's step installs it, so a
// batch's partial progress is a schedule step.
//
// Negative controls change one rule each (pause::Variant):
// kEagainWithoutDrain retries at once without reading events;
// kFillPastRemove issues a background batch without holding the space, so
// a REMOVE read while the batch is in flight does not stop what is left of
// it; kForkChildFromParentState gives a
// forked child the parent's page map as it is when the child is served.
//
// Children forked by a program step wait until the final phase, then copy
// their view of the region into shared memory (async-signal-safe code
// only) and exit.
//
// Thread safety: Setup and the checks on the exploring thread; ReaderNext
// and FillerNext on the exploring thread while the workers are parked;
// the steps on actors' threads. One mutex (the space lock) guards the
// monitor's state and is held across every fill and read, as the restore
// engine holds a space's lock.
#ifndef PAGEWISE_EXPLORE_UFFD_WORLD_H_
#define PAGEWISE_EXPLORE_UFFD_WORLD_H_

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/pause_point.h"
#include "explore/controller.h"
#include "pagewise/status.h"
#include "restore/engine.h"
#include "sys/env.h"
#include "sys/userfaultfd.h"

namespace pagewise::explore {

enum class FillOp { kCopy, kZeropage, kMove };

struct UffdWorldOptions {
  size_t pages = 2;
  FillOp fill = FillOp::kCopy;
  size_t batch_pages = 2;
  std::vector<size_t> zero_pages;
  std::vector<size_t> gated;
  bool filler = true;           // start the filler worker
  bool reserve_target = false;  // a PROT_NONE reservation to mremap onto
  bool engine = false;          // serve with restore::Engine (above)
};

class UffdWorld {
 public:
  explicit UffdWorld(pause::Variant variant) : variant_(variant) {}
  ~UffdWorld();  // closes the userfaultfds, reaps the child, unmaps
  UffdWorld(const UffdWorld&) = delete;
  UffdWorld& operator=(const UffdWorld&) = delete;

  Status Setup(const UffdWorldOptions& options);
  // Adds the reader and (options.filler) the filler workers (reference
  // monitor only: the engine's threads join by themselves).
  void AddWorkers(Controller& c);
  // After the program actors were added: attaches `c`, starts the engine
  // (options.engine) and runs the prologue (the loop thread's first round,
  // which starts the filler; both then wait at their start points).
  Status Begin(Controller& c);

  size_t ps() const { return ps_; }
  char* page(size_t i) const { return region_ + i * ps_; }
  char* target(size_t i) const { return target_ + i * ps_; }
  Env* env() const { return env_; }

  // Program steps (on a program actor's thread).
  void OpenGate();  // installs the gated source pages
  void Fork();      // fork(2); the child waits for the final phase
  // Reads page i at the region's current address (a fault into the
  // monitor), keeping a copy in *seen.
  void Touch(size_t i, std::vector<char>* seen);
  // madvise(pages [lo, hi), advice) at the region's current address.
  void Advise(size_t lo, size_t hi, int advice);
  void Remap(bool dontunmap);  // mremap the region onto the target
  // Unmaps pages [lo, hi) and maps fresh private memory in their place (a
  // later allocation reusing the addresses), in one mmap(MAP_FIXED).
  void UnmapAndReuse(size_t lo, size_t hi);

  // After the schedule (exploring thread): lets every actor run freely
  // while serving, completes the background fill, then reads the region
  // (and the child's view) through the monitor. Appends violations.
  void Finish(Controller& c, std::vector<std::string>* violations);

  // Checks after Finish: the region's (current address) page i read its
  // source bytes, or zeros.
  void ExpectParent(size_t i, bool zero, const char* what, std::vector<std::string>* out) const;
  void ExpectChild(size_t i, const char* what, std::vector<std::string>* out) const;
  // `bytes` are page i's source bytes.
  bool SameAsSource(size_t i, const std::vector<char>& bytes) const {
    return bytes.size() == ps_ && std::equal(bytes.begin(), bytes.end(), stash_.begin() + i * ps_);
  }
  // After a DONTUNMAP mremap: the old range's page i read zero.
  void ExpectOldZero(size_t i, std::vector<std::string>* out) const;
  bool parent_read(size_t i) const { return i < parent_view_.size() && parent_view_[i].ok; }
  // Lines describing every fill the monitor issued (for the printout).
  const std::vector<std::string>& log() const { return log_; }

 private:
  enum class State : uint8_t { kMissing, kFilled, kDropped, kGone };
  struct Space {
    sys::Userfaultfd uffd;
    uint64_t base = 0;  // address of page 0 in this space
    std::vector<State> st;
    bool child = false;
    // kForkChildFromParentState: read the parent's map instead of st.
    Space* state_from = nullptr;
    State& at(size_t i) { return state_from ? state_from->st[i] : st[i]; }
  };
  struct View {
    bool ok = false;
    std::vector<char> bytes;
  };
  enum class Fill { kDone, kAgain, kFailed };
  struct Installed {
    Fill fill;
    size_t done;  // pages that landed
  };
  enum class Again { kDrained, kResolved, kStuck };

  Status SetupGate();  // the second userfaultfd behind options.gated
  // Reads every pending message of every space, applying events and
  // queueing faults. Caller holds mu_.
  size_t DrainLocked();
  void ApplyLocked(Space& s, const UffdEvent& e);
  // Installs pages [i, i + n) of `s` with `op` (mu_ held by `lk`, also
  // across the ioctl); marks what landed.
  // `background`: the filler's batch (the kFillPastRemove control).
  Installed Install(std::unique_lock<std::mutex>& lk, Space& s, size_t i, size_t n, FillOp op,
                    bool background);
  // After EAGAIN (mu_ held): the rule, or the negative control's retries.
  Again AfterAgain(const char* who, const std::function<Fill()>& retry);
  void ServeFault(std::unique_lock<std::mutex>& lk, Space& s, uint64_t addr);
  bool AnyReadable();  // a message is pending on a space (poll, no mu_)
  std::optional<std::string> ReaderNext();
  void ReaderStep();
  std::optional<std::string> FillerNext();
  void FillerStep();
  // The next run of missing pages of the original space ([*i, *i + *n)).
  bool NextRun(size_t* i, size_t* n);
  // Serves (exploring thread) until done() or the message budget is spent.
  bool ServeUntil(const std::function<bool()>& done, const char* what,
                  std::vector<std::string>* violations);
  // Reads the pages at `base` on a helper thread while serving its faults.
  void ReadWhileServing(const char* base, std::vector<View>* out, const char* what,
                        std::vector<std::string>* violations);
  // Closes every userfaultfd (tearing down a run that hung).
  void CloseAll();
  // Engine mode: reads the pages at `base` on a helper thread (the engine
  // serves its faults); false after a hang (reported, the engine stopped).
  bool ReadEngineServed(const char* base, std::vector<View>* out, const char* what,
                        std::vector<std::string>* violations);
  // Engine mode: the final phase (Finish's counterpart).
  void FinishEngine(Controller& c, std::vector<std::string>* violations);
  // Lets the forked child copy its view into shared_ (returns the futex
  // words: [1] turns 1 when it is done).
  std::atomic<uint32_t>* ReleaseChild();
  // Engine mode: ReleaseChild, then waits up to 10 s for the copy.
  bool ChildCopied();
  // Reaps the child (killing it unless `copied`) and keeps its view.
  void TakeChildView(pid_t child, bool copied);
  // "" if v is page i's source bytes (or zeros); else what it is.
  std::string Compare(const View& v, size_t i, bool zero) const;
  char* Base() const;  // the region's current address
  [[noreturn]] void ChildMain();
  void Note(const std::string& line);

  const pause::Variant variant_;
  UffdWorldOptions opt_;
  Env* env_ = Env::Default();
  size_t ps_ = 4096;
  std::vector<char> stash_;  // the source's bytes
  char* region_ = nullptr;   // the region at its first address
  char* target_ = nullptr;   // mremap target reservation
  char* srcbuf_ = nullptr;   // COPY sources (gated pages behind gate_)
  char* staging_ = nullptr;  // MOVE sources (MADV_DONTFORK)
  char* shared_ = nullptr;   // futex words, then the child's copy
  sys::Userfaultfd gate_;
  // Guards spaces_, faults_, stuck_, closed_, the logs: the space lock. A
  // fill holds it across its ioctl (see Install).
  std::mutex mu_;
  std::mutex fds_mu_;     // guards fds_
  std::vector<int> fds_;  // every space's userfaultfd, for AnyReadable
  std::vector<std::unique_ptr<Space>> spaces_;
  struct Pending {
    Space* s;
    uint64_t addr;
  };
  std::vector<Pending> faults_;  // read, not served yet
  bool stuck_ = false;           // kEagainWithoutDrain gave up: a livelock
  bool closed_ = false;          // CloseAll() ran
  std::vector<std::string> fill_violations_;
  std::vector<std::string> log_;
  std::atomic<uint64_t> remapped_base_{0};  // the region's address after Remap
  bool dontunmap_ = false;
  std::atomic<pid_t> child_{-1};
  std::vector<View> old_view_;  // the range a DONTUNMAP mremap left
  std::vector<View> parent_view_;
  std::vector<View> child_view_;
  std::unique_ptr<restore::Engine> engine_;  // options.engine
};

}  // namespace pagewise::explore

#endif  // PAGEWISE_EXPLORE_UFFD_WORLD_H_
