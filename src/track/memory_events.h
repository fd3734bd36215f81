// Memory events the program causes on tracked memory, seen through
// libpagewise-interpose, pagewise's opt-in libc interposers
// (src/sys/interpose/interpose.h).
//
// The kernel loses some information a tracker needs: madvise(MADV_REMOVE) on
// shmem replaces a write-protected pte by a uffd-wp marker, so a page whose
// content became zero looks clean; with the mprotect backend, a program's
// mprotect(PROT_WRITE) makes unwritten pages writable without a fault, and
// MADV_DONTNEED zeroes pages without a write, and mremap moves read-only
// pages to an untracked address. libpagewise-interpose defines madvise(),
// mprotect() and mremap() (and the read family, kernel_writes.h); when it is
// part of the process (InterposersLinked()), this file connects them to the
// trackers:
//   - madvise with MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_REMOVE, MADV_FREE
//     or MADV_GUARD_INSTALL: after the call succeeded, every listener's
//     OnDropped() receives the range (listeners clip it to what they track);
//   - mprotect, mremap: while an MprotectInterceptor is installed (the
//     mprotect backend), it performs the call instead of the kernel wrapper.
// Without libpagewise-interpose (the default: linking libpagewise replaces
// no libc function), registering does nothing, InstallMprotectInterceptor
// fails, and the mprotect backend is unavailable (track/backends.cc).
// Only calls that go through the libc symbols of this process are seen: raw
// system calls and glibc-internal calls (malloc trimming its heaps) are not.
//
// Thread safety: registration and the interposers are thread safe. Callbacks
// run on the thread that called madvise/mprotect, under a process-wide
// registry mutex: they must not call (un)register functions, and must not
// block on anything that a thread inside madvise/mprotect could hold. The
// interposers are not async-signal-safe while a listener is registered.
#ifndef PAGEWISE_TRACK_MEMORY_EVENTS_H_
#define PAGEWISE_TRACK_MEMORY_EVENTS_H_

#include <cstddef>
#include <cstdint>

namespace pagewise::track_internal {

class MemoryEventListener {
 public:
  virtual ~MemoryEventListener() = default;
  // [start, end) (page aligned outward) was dropped by a successful madvise:
  // its pages now read as zero (or as the file's content).
  virtual void OnDropped(uint64_t start, uint64_t end) = 0;
};

class MprotectInterceptor {
 public:
  virtual ~MprotectInterceptor() = default;
  // Performs the program's mprotect(addr, len, prot) in its own way. Returns
  // 0, or -1 with errno set, exactly like mprotect(2).
  virtual int InterceptMprotect(void* addr, size_t len, int prot) = 0;
  // Performs mremap(old_addr, old_len, new_len, flags, new_addr): returns
  // the new address, or MAP_FAILED with errno set, exactly like mremap(2).
  virtual void* InterceptMremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                                void* new_addr) = 0;
};

// True if libpagewise-interpose is part of this process (linked or
// preloaded), i.e. the libc calls above reach the functions below.
bool InterposersLinked();

// A listener stays registered until unregistered; unregistering waits for
// callbacks in progress (it takes the registry mutex). Not from a callback.
void RegisterMemoryEventListener(MemoryEventListener* listener);
void UnregisterMemoryEventListener(MemoryEventListener* listener);

// At most one interceptor. Install returns false if another is installed or
// the interposers are not linked.
bool InstallMprotectInterceptor(MprotectInterceptor* interceptor);
void RemoveMprotectInterceptor(MprotectInterceptor* interceptor);

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_MEMORY_EVENTS_H_
