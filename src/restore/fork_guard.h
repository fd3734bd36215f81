// ForkGuard: keeps in-process restores alive across the program's fork(2).
//
// The problem: glibc's fork() takes every malloc arena lock (and the stdio
// list lock) in the forking thread and holds them across the clone system
// call; inside it, dup_mmap queues UFFD_EVENT_FORK and the forking thread
// sleeps until a monitor reads that message. An in-process monitor thread
// that calls malloc/free at that moment (or waits for a thread that does,
// e.g. for a mutex) blocks on those locks, never reads the message, and
// fork never returns.
//
// The protocol: a pthread_atfork "prepare" handler (glibc runs it before it
// takes its own locks) asks every registered engine to enter fork mode and
// waits until it did: the filler thread parks at a point where it holds
// nothing, and the server thread switches to a loop that only polls and
// reads userfaultfd messages into preallocated storage (no allocation, no
// lock anyone could hold while allocating). The "parent" handler (after
// fork returned, locks released) ends fork mode: the server then applies
// what it buffered (the FORK event among them). The "child" handler marks
// every engine as a forked copy: its threads do not exist in the child, so
// it must never be joined or waited for there.
//
// Callbacks run on engine threads must therefore not fork.
//
// Thread safety: Register/Unregister may be called from any thread; the
// handlers run in the forking thread. A fork and a Register/Unregister
// exclude each other (one mutex, held from prepare to parent/child).
#ifndef PAGEWISE_RESTORE_FORK_GUARD_H_
#define PAGEWISE_RESTORE_FORK_GUARD_H_

namespace pagewise::restore {

// What an engine does for the guard (implemented by Engine).
class ForkAware {
 public:
  virtual ~ForkAware() = default;
  // Returns once the engine's threads can no longer allocate or hold locks
  // until LeaveForkMode(). Runs in the forking thread, before fork.
  virtual void EnterForkMode() = 0;
  // After fork, in the parent.
  virtual void LeaveForkMode() = 0;
  // After fork, in the child (single-threaded; async-signal-safe work only).
  virtual void BecomeForkedCopy() = 0;
};

// Adds `engine` to the engines the guard looks after (installs the atfork
// handlers the first time). `engine` must stay valid until Unregister.
// Returns false if the table of engines is full.
bool RegisterForFork(ForkAware* engine);
// Removes it; waits for a fork in progress to finish first.
void UnregisterForFork(ForkAware* engine);

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_FORK_GUARD_H_
