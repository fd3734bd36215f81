// UffdLoop: the one userfaultfd poll/read/dispatch loop of pagewise.
//
// A loop waits (poll(2), through Env) on a set of userfaultfds ("sources",
// each with a caller-chosen 64-bit tag), its own wake eventfd and any
// number of watched descriptors (a client socket, a stop eventfd of the
// caller's). When a source is readable it reads its messages in batches,
// without blocking, and hands each to the UffdHandler through one switch
// over the message types (DispatchUffdEvent): OnPagefault, OnFork, OnRemap,
// OnRemove, OnUnmap, OnUnknown. Within one batch the non-cooperative events
// are dispatched before the page faults: the kernel queues pending faults
// ahead of pending events, so a fault read in the same batch as a REMOVE or
// UNMAP may concern memory the event already changed, and a handler that
// serves faults must see the event first.
//
// Users: the live snapshot's fault thread (src/live), the uffd-wp tracker's
// thread (src/track), the lazy client's watchdog (src/restore/client.cc).
//
// Designed for the restore engine too (src/restore/engine*), which needs:
//   - several spaces: one source per address space (the program and each
//     forked child), added and removed while the loop runs: AddUffd()/
//     RemoveUffd() from the loop thread (e.g. in OnFork or BeforePoll);
//     the tag names the space;
//   - reads of a space under that space's mutex (fills and reads must be
//     serialised per space): BeforeRead(tag) / AfterRead(tag) bracket the
//     read and dispatch of one source's batch, so the handler can lock there;
//   - draining from another thread (the filler, after an EAGAIN): the free
//     function DrainUffd() is the same read-and-dispatch with the caller's
//     own buffer;
//   - fork mode, in which the server thread must not allocate (glibc holds
//     its malloc locks across fork(2)): the loop never allocates once its
//     capacity covers the sources (Reserve()), and reads into storage it
//     mapped at Create(); the handler records the messages into its own
//     preallocated storage instead of applying them;
//   - a watched client socket: Watch(fd) and OnWatched(fd, revents);
//   - being woken by other threads: Wake() (OnWake on the loop thread).
//
// Memory: the poll set and the message buffer live in private mappings
// made by the loop (memory(): their ranges), not on the heap, so that a loop
// serving write-protect faults never writes memory its own users may track
// (the uffd-wp tracker refuses to track it).
//
// Stopping: Stop() (any thread) makes Run() return OK after the current
// iteration; with Options::drain_on_stop it first reads and dispatches what
// the sources still have pending (the live snapshot must not leave a writer
// blocked on a fault nobody reads). A handler may also stop from a callback
// (Stop(), or BeforePoll returning false).
//
// Thread safety: Wake() and Stop() may be called from any thread, any time
// until destruction. Everything else (Run, RunOnce, AddUffd, RemoveUffd,
// Watch, Unwatch, Reserve) is for one thread at a time: the loop thread
// while Run() runs, any single thread otherwise. Handler callbacks run on
// the thread that called Run()/RunOnce(). The loop owns only its wake
// eventfd and its mapping; sources and watched fds stay the caller's and
// must stay open while registered.
#ifndef PAGEWISE_SYS_UFFD_LOOP_H_
#define PAGEWISE_SYS_UFFD_LOOP_H_

#include <poll.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "pagewise/status.h"
#include "pagewise/time.h"
#include "pagewise/tracker.h"
#include "sys/env.h"

namespace pagewise::sys {

// What a loop calls. Every method has a default that does nothing (OnFork's
// closes the child's descriptor), so a handler overrides only what its
// userfaultfd was set up to deliver.
class UffdHandler {
 public:
  virtual ~UffdHandler() = default;

  // ---- messages (from DispatchUffdEvent) ----
  virtual void OnPagefault(uint64_t tag, const UffdEvent& e) {
    (void)tag;
    (void)e;
  }
  // e.fork_fd is the child's userfaultfd. Return true if the handler took
  // ownership of it; false (the default) lets the dispatcher close it.
  virtual bool OnFork(uint64_t tag, const UffdEvent& e) {
    (void)tag;
    (void)e;
    return false;
  }
  virtual void OnRemap(uint64_t tag, const UffdEvent& e) {
    (void)tag;
    (void)e;
  }
  virtual void OnRemove(uint64_t tag, const UffdEvent& e) {
    (void)tag;
    (void)e;
  }
  virtual void OnUnmap(uint64_t tag, const UffdEvent& e) {
    (void)tag;
    (void)e;
  }
  virtual void OnUnknown(uint64_t tag, const UffdEvent& e) {
    (void)tag;
    (void)e;
  }

  // ---- around one source's batch of reads ----
  // Called before the first read of a readable source in an iteration, and
  // after its last message was dispatched (`messages`: how many were read).
  virtual void BeforeRead(uint64_t tag) { (void)tag; }
  virtual void AfterRead(uint64_t tag, size_t messages) {
    (void)tag;
    (void)messages;
  }
  // Reading the source failed, or poll reported POLLERR/POLLNVAL on it
  // (its descriptor was closed or is broken). The source stays registered:
  // remove it (RemoveUffd) unless the error is transient.
  virtual void OnReadError(uint64_t tag, const Status& error) {
    (void)tag;
    (void)error;
  }

  // ---- the rest of the poll set ----
  // A watched descriptor has revents (POLLIN, POLLHUP, POLLERR...).
  virtual void OnWatched(int fd, short revents) {
    (void)fd;
    (void)revents;
  }
  // Wake() was called (possibly several times) since the last OnWake.
  virtual void OnWake() {}
  // The poll's timeout expired with nothing ready.
  virtual void OnIdle() {}
  // Before each poll: may change the sources and watched fds, and set the
  // poll's timeout (*timeout starts as kNoTimeout). Return false to make
  // Run() return OK now.
  virtual bool BeforePoll(Duration* timeout) {
    (void)timeout;
    return true;
  }
};

// The one switch over message types: calls the handler method for e.kind.
// A FORK the handler did not take has its descriptor closed through `env`.
void DispatchUffdEvent(Env* env, uint64_t tag, const UffdEvent& e, UffdHandler* handler);

// Reads the messages pending on userfaultfd `fd` without blocking, in
// batches of `capacity` into `buffer`, and dispatches each batch (events
// first, then faults), for at most `max_rounds` batches (so a flood of
// faults cannot hold the caller forever; what is left keeps the fd
// readable). Does not call BeforeRead/AfterRead (the caller holds whatever
// lock it needs). Returns how many messages were read; a failed read
// returns its error after dispatching what came before it.
Result<size_t> DrainUffd(Env* env, int fd, uint64_t tag, UffdHandler* handler, UffdEvent* buffer,
                         size_t capacity, int max_rounds = 16);

class UffdLoop {
 public:
  struct Options {
    size_t batch = 64;           // messages per read (1..4096)
    size_t capacity = 8;         // sources + watched fds before growing
    int max_rounds = 16;         // batches read per source per iteration
    bool drain_on_stop = false;  // see "Stopping" above
  };

  // Creates the wake eventfd and maps the loop's storage through `env`
  // (not null; it must outlive the loop). Errors: eventfd or mmap failures.
  static Result<std::unique_ptr<UffdLoop>> Create(Env* env, const Options& options);
  static Result<std::unique_ptr<UffdLoop>> Create(Env* env) { return Create(env, Options{}); }

  ~UffdLoop();  // closes the wake eventfd, unmaps the storage
  UffdLoop(const UffdLoop&) = delete;
  UffdLoop& operator=(const UffdLoop&) = delete;

  // Registers userfaultfd `fd` (not owned) under `tag` (tags should be
  // unique; a removed tag may be reused). Grows the storage when the set
  // exceeds capacity (the only allocation: call Reserve() first where the
  // thread must not allocate). Errors: growing failed.
  Status AddUffd(int fd, uint64_t tag);
  // Unregisters the source with `tag` (no-op if absent). Safe from a
  // handler callback: the current iteration skips it from then on.
  void RemoveUffd(uint64_t tag);
  // Watches `fd` (not owned) for `events` (POLLIN...); OnWatched reports it.
  Status Watch(int fd, short events = POLLIN);
  void Unwatch(int fd);
  // Makes room for `entries` sources + watched fds without growing later.
  Status Reserve(size_t entries);
  size_t sources() const;

  // Any thread: wakes the loop (OnWake), or makes Run() return.
  void Wake();
  void Stop();
  bool stopping() const { return stop_.load(std::memory_order_acquire); }

  // Polls and dispatches until Stop() (or BeforePoll returns false): OK.
  // A failing poll returns its error (the loop stays usable: call Run()
  // again to retry).
  Status Run(UffdHandler* handler);
  // One iteration: BeforePoll, one poll (at most `timeout`, further
  // limited by BeforePoll), dispatch. Returns false once stopping.
  Result<bool> RunOnce(UffdHandler* handler, Duration timeout = kNoTimeout);

  // The loop's private mappings (poll set, message buffer): memory the
  // loop thread writes. They move when the poll set grows.
  std::vector<PageRange> memory() const;

 private:
  struct Entry {
    int fd = -1;
    short events = POLLIN;
    bool uffd = false;
    bool removed = false;
    uint64_t tag = 0;
  };
  UffdLoop(Env* env, const Options& options, int wake_fd);
  Status Grow(size_t entries);
  void Compact();
  // One poll (at most `timeout`) and its dispatch; true if any message was
  // read.
  Result<bool> Iterate(UffdHandler* handler, Duration timeout);
  void DrainAll(UffdHandler* handler);
  size_t ReadSource(size_t index, UffdHandler* handler);  // messages read

  Env* const env_;
  const Options options_;
  const int wake_fd_;
  std::atomic<bool> stop_{false};
  // The poll set (one mapping, replaced when it grows): capacity_ + 1
  // pollfds, then capacity_ entries (written only by Add/Remove/Compact).
  void* map_ = nullptr;
  size_t map_len_ = 0;
  size_t capacity_ = 0;
  struct pollfd* pfds_ = nullptr;
  Entry* entries_ = nullptr;
  // The message buffer (its own mapping, never moved): options_.batch events.
  void* events_map_ = nullptr;
  size_t events_len_ = 0;
  UffdEvent* events_ = nullptr;
  size_t count_ = 0;
  bool dirty_ = false;  // an entry was removed during dispatch: compact
};

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_UFFD_LOOP_H_
