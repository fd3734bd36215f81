// The C ABI between libpagewise and libpagewise-interpose, pagewise's libc
// interposers.
//
// libpagewise-interpose (this directory) defines madvise, mprotect, mremap and
// the read family (read, pread, pread64, readv, preadv, preadv64, preadv2,
// preadv64v2, recv, recvfrom, recvmsg and the fortified __read_chk,
// __pread_chk, __pread64_chk, __recv_chk, __recvfrom_chk). A program gets them
// only if it links that library or preloads it; linking libpagewise alone
// replaces no libc function. The mprotect tracking backend needs them (without
// them a program's mprotect(PROT_WRITE) or a kernel write into a tracked page
// would escape the tracker); the other backends use the madvise hook, when
// present, to see drops the kernel hides (MADV_REMOVE on shmem, every drop for
// soft-dirty).
//
// libpagewise finds the interposers through one weak reference to
// pagewise_interpose_v1(): non-null only when libpagewise-interpose is part of
// the process (linked into the executable, a shared library it needs, or
// LD_PRELOAD). The table it returns is the whole protocol; a later version
// adds fields at the end and bumps `size`, or adds pagewise_interpose_v2().
// Both libraries are self-contained (the interposers reach the kernel through
// src/sys/raw_mm.h and raw_io.h, inline), so they can be linked together
// statically or dynamically in either order.
//
// Thread safety: every table function is thread safe. Drop listeners run on
// the thread that called madvise, under the interposer's registry mutex (see
// src/track/memory_events.h for the rules listeners follow). The kernel-write
// opener must be async-signal-safe, allocate nothing and take no lock.
#ifndef PAGEWISE_SYS_INTERPOSE_INTERPOSE_H_
#define PAGEWISE_SYS_INTERPOSE_INTERPOSE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// [start, end) (page aligned outward) was dropped by a successful madvise.
typedef void (*pagewise_drop_fn)(void* ctx, uint64_t start, uint64_t end);

// Performs the program's mprotect/mremap instead of the kernel wrapper while
// installed. Same return conventions as mprotect(2) and mremap(2).
struct pagewise_mprotect_interceptor {
  void* ctx;
  int (*mprotect)(void* ctx, void* addr, size_t len, int prot);
  void* (*mremap)(void* ctx, void* old_addr, size_t old_len, size_t new_len, int flags,
                  void* new_addr);
};

// Makes the tracked pages of [start, end) ready for a kernel write; returns
// how many it opened (0: none tracked; the call goes straight to the kernel).
typedef size_t (*pagewise_kernel_write_opener)(uint64_t start, uint64_t end);

struct pagewise_interpose_table_v1 {
  uint32_t size;  // sizeof(struct pagewise_interpose_table_v1) of the library
  // Adds a listener; returns 0, or -1 if out of memory. A (fn, ctx) pair
  // stays registered until removed; removing waits for running callbacks.
  int (*add_drop_listener)(pagewise_drop_fn fn, void* ctx);
  void (*remove_drop_listener)(pagewise_drop_fn fn, void* ctx);
  // At most one interceptor: returns 0, or -1 if another is installed. The
  // struct must stay valid until removed.
  int (*install_mprotect_interceptor)(const struct pagewise_mprotect_interceptor* interceptor);
  void (*remove_mprotect_interceptor)(const struct pagewise_mprotect_interceptor* interceptor);
  // Installs the opener the read family calls first (NULL removes it). An
  // interposer that loaded the previous opener may still call it after its
  // removal: an opener must stay callable for the process's lifetime.
  void (*set_kernel_write_opener)(pagewise_kernel_write_opener opener);
};

// What libpagewise-interpose defines in place of libc: exported, unversioned
// (interpose.map), whatever the -fvisibility of the build.
#define PAGEWISE_INTERPOSER extern "C" __attribute__((visibility("default")))

// Defined by libpagewise-interpose; never fails.
__attribute__((visibility("default"))) const struct pagewise_interpose_table_v1*
pagewise_interpose_v1(void);

// How often a read-family call whose kernel copy faulted (a Collect()
// re-protected a destination page in between) is opened and retried.
enum { PAGEWISE_KERNEL_WRITE_ATTEMPTS = 8 };

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // PAGEWISE_SYS_INTERPOSE_INTERPOSE_H_
