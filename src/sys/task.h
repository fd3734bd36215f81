// Processes and threads, for code that drives them step by step (the
// explorer, src/explore/): thread ids, fork/wait/_exit, futex waits on a
// word that may be shared between processes, and what /proc says a thread
// is doing (its scheduler state, where it sleeps in the kernel, how much CPU
// it used).
//
// Thread safety: every function is safe from any thread. ExitChild,
// FutexWait and FutexWake are async-signal-safe and allocate nothing, so a
// child forked from a multithreaded process may use them.
#ifndef PAGEWISE_SYS_TASK_H_
#define PAGEWISE_SYS_TASK_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "pagewise/status.h"

namespace pagewise::sys {

// The calling thread's kernel id (gettid).
pid_t ThreadId();
pid_t ProcessId();

// fork(2) through libc, so that pthread_atfork handlers run (the restore
// engine's fork guard relies on them). Returns the child's pid in the
// parent and 0 in the child. In the child only async-signal-safe code may
// run until it exits (the parent was multithreaded).
Result<pid_t> Fork();
// fork(2) as the bare clone system call, without libc's fork: no
// pthread_atfork handlers and, above all, none of the locks libc's fork
// holds across the system call (malloc's arenas, stdio). A fork that raises
// a userfaultfd FORK event sleeps inside the system call until a monitor
// reads the event; with libc's fork every other thread of the process that
// allocates meanwhile would wait for that fork, so a monitor running in the
// same process (pagewise explore) uses this one. The child may only use
// async-signal-safe code that does not depend on libc's per-process state
// (no getpid cache, no malloc) and must end with ExitChild().
Result<pid_t> ForkRaw();
// _exit(2): ends a forked child without running destructors or atexit.
[[noreturn]] void ExitChild(int code);
// waitpid(2) for one child. With `block` false returns false at once if it
// is still running; true once it was reaped (*wstatus: its wait status).
Result<bool> ReapChild(pid_t pid, bool block, int* wstatus);
// kill(2).
Status SignalProcess(pid_t pid, int sig);

// Futex wait while *word == expected, for at most timeout_ns (< 0: no
// limit). `shared`: the word lives in a MAP_SHARED mapping used by several
// processes (else the cheaper private futex). Returns false on timeout;
// true when woken or when *word != expected already (callers re-check).
bool FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns, bool shared);
// Wakes every waiter on `word`.
void FutexWakeAll(std::atomic<uint32_t>* word, bool shared);

// What /proc/self/task/<tid>/{stat,wchan,schedstat} say about a thread of
// this process.
struct ThreadSched {
  bool exists = false;   // false: the thread is gone
  char state = '?';      // R running/runnable, S sleeping, D uninterruptible, ...
  uint64_t cpu_ns = 0;   // time it ran so far (schedstat)
  char wchan[64] = {0};  // the kernel function it sleeps in ("0" if running)
  bool sleeping() const { return state == 'S' || state == 'D'; }
};
// Reads a thread of this process; exists == false if it has exited.
ThreadSched ReadThreadSched(pid_t tid);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_TASK_H_
