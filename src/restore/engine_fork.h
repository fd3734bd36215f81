// ForkMode: the restore engine's side of the fork guard (fork_guard.h) as
// an explicit state machine.
//
//   kServing --Request()--> kRequested --server and filler parked--> kParked
//      ^                                                              |
//      |                                                       Release() (fork returned)
//      +------------ ServerApplied() ------------ kApplying <---------+
//
// kRequested/kParked: a fork is about to happen or happening. The filler
// is parked holding nothing; then the server thread only polls and reads
// userfaultfd messages into preallocated storage (glibc holds its malloc
// locks across fork(2), and fork(2) waits for its FORK message to be read,
// so nothing may allocate or wait for a thread that allocates). Request()
// returns in kParked. kApplying: fork returned in the parent; the server
// applies what it read (the FORK event among them) while the filler stays
// parked, so that the parent is not filled before the child's copy of its
// map is taken. A new Request() may come before ServerApplied(): the phase
// then stays requested. Once the server thread is gone every request
// returns at once.
//
// Thread safety: every method is safe from any thread; each says which
// thread calls it. Callbacks given to Request/Release must not take locks
// that engine threads hold while waiting here.
#ifndef PAGEWISE_RESTORE_ENGINE_FORK_H_
#define PAGEWISE_RESTORE_ENGINE_FORK_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace pagewise::restore {

class ForkMode {
 public:
  enum class Phase { kServing, kRequested, kParked, kApplying };

  // The forking thread, before fork: requests fork mode, calls `wake`
  // (which must wake the server's poll and the filler's idle wait) and
  // waits until both threads parked (or the server thread is gone).
  void Request(const std::function<void()>& wake);
  // The forking thread, after fork in the parent.
  void Release(const std::function<void()>& wake);

  Phase phase() const { return phase_.load(); }
  // True while a fork is requested or happening (the server keeps reading
  // only; the filler parks).
  bool forking() const {
    const Phase p = phase_.load();
    return p == Phase::kRequested || p == Phase::kParked;
  }
  // True from a request until the server applied what it read.
  bool active() const { return phase_.load() != Phase::kServing; }

  // Server thread: waits until the filler is parked (or not running, or
  // Shutdown): no fill may run while the server reads a message it will
  // only apply after the fork (a fill validated against the map without it
  // could land after the zap the message announced).
  void WaitFillerParked();
  // Server thread: acknowledges a request (its storage is allocated, the
  // filler is parked).
  void ServerParked();
  // Server thread: done applying what it read during the fork.
  void ServerApplied();
  // Server thread, once, as it exits: requests no longer wait for it.
  void ServerExited();

  // Filler thread: parks while a fork is active; returns when service
  // resumed or Shutdown() was called.
  void ParkFiller();
  // Filler lifecycle (a request waits for a running filler to park).
  void SetFillerRunning(bool running);
  // Releases a parked filler for good (the engine stops).
  void Shutdown();

 private:
  bool AcknowledgedLocked() const {
    return server_gone_ || (server_parked_ && (!filler_running_ || filler_parked_));
  }

  std::atomic<Phase> phase_{Phase::kServing};  // written under mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool server_parked_ = false;   // guarded by mu_
  bool filler_parked_ = false;   // guarded by mu_
  bool filler_running_ = false;  // guarded by mu_
  bool server_gone_ = false;     // guarded by mu_
  bool shutdown_ = false;        // guarded by mu_
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_FORK_H_
