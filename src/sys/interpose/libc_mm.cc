// libpagewise-interpose: madvise(2), mprotect(2) and mremap(2), and the
// registry of drop listeners and the mprotect interceptor behind them (the
// table returned by pagewise_interpose_v1(), interpose.h).
//
// These definitions replace libc's for every caller in the process that
// resolves the libc names to this library (it is linked into the executable,
// needed before libc, or preloaded). Each reaches the kernel through the raw
// calls of src/sys/raw_mm.h, never through libc, so it cannot recurse:
//   - madvise: performs the call; if it succeeded and the advice drops pages
//     (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_REMOVE, MADV_FREE,
//     MADV_GUARD_INSTALL), every drop listener receives the page-aligned range.
//   - mprotect, mremap: while an interceptor is installed (the mprotect
//     tracking backend), the interceptor performs the call.
// Only calls through the libc symbols are seen: raw system calls and
// glibc-internal calls (malloc trimming its arenas) are not.
//
// Thread safety: thread safe. While anything is registered, the calls take the
// registry mutex, so they are not async-signal-safe then (libc's are); with
// nothing registered they are one atomic load and the system call.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "sys/interpose/interpose.h"
#include "sys/raw_mm.h"

namespace pagewise::interpose {
namespace {

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif
constexpr int kMadvGuardInstall = 102;  // Linux 6.13: zaps the pages too

struct Registry {
  std::mutex mu;
  std::vector<std::pair<pagewise_drop_fn, void*>> listeners;   // guarded by mu
  const pagewise_mprotect_interceptor* interceptor = nullptr;  // guarded by mu
  // Nonzero while anything is registered: lets the interposers skip the
  // mutex in the common case of a process that tracks nothing.
  std::atomic<int> active{0};
};

Registry& GetRegistry() {
  static Registry* r = new Registry();  // never destroyed: usable during exit
  return *r;
}

bool DropsPages(int advice) {
  return advice == MADV_DONTNEED || advice == MADV_DONTNEED_LOCKED || advice == MADV_REMOVE ||
         advice == MADV_FREE || advice == kMadvGuardInstall;
}

long PageSize() {
  static const long page = sysconf(_SC_PAGESIZE);
  return page;
}

int AddDropListener(pagewise_drop_fn fn, void* ctx) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  try {
    r.listeners.emplace_back(fn, ctx);
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  }
  r.active.fetch_add(1, std::memory_order_release);
  return 0;
}

void RemoveDropListener(pagewise_drop_fn fn, void* ctx) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = std::find(r.listeners.begin(), r.listeners.end(), std::make_pair(fn, ctx));
  if (it == r.listeners.end()) return;
  r.listeners.erase(it);
  r.active.fetch_sub(1, std::memory_order_release);
}

int InstallInterceptor(const pagewise_mprotect_interceptor* interceptor) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != nullptr) return -1;
  r.interceptor = interceptor;
  r.active.fetch_add(1, std::memory_order_release);
  return 0;
}

void RemoveInterceptor(const pagewise_mprotect_interceptor* interceptor) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != interceptor) return;
  r.interceptor = nullptr;
  r.active.fetch_sub(1, std::memory_order_release);
}

}  // namespace

// Defined in libc_read.cc.
void SetKernelWriteOpener(pagewise_kernel_write_opener opener);

}  // namespace pagewise::interpose

namespace pi = pagewise::interpose;

PAGEWISE_INTERPOSER const struct pagewise_interpose_table_v1* pagewise_interpose_v1(void) {
  static const pagewise_interpose_table_v1 table = {
      sizeof(pagewise_interpose_table_v1),
      pi::AddDropListener,
      pi::RemoveDropListener,
      pi::InstallInterceptor,
      pi::RemoveInterceptor,
      pi::SetKernelWriteOpener,
  };
  return &table;
}

PAGEWISE_INTERPOSER int madvise(void* addr, size_t len, int advice) {
  const int rc = pagewise::sys::RawMadvise(addr, len, advice);
  pi::Registry& r = pi::GetRegistry();
  if (rc != 0 || !pi::DropsPages(advice) || r.active.load(std::memory_order_acquire) == 0) {
    return rc;
  }
  const int saved_errno = errno;
  const uint64_t page = static_cast<uint64_t>(pi::PageSize());
  const uint64_t start = reinterpret_cast<uint64_t>(addr) & ~(page - 1);
  const uint64_t end = (reinterpret_cast<uint64_t>(addr) + len + page - 1) & ~(page - 1);
  {
    std::lock_guard<std::mutex> lock(r.mu);
    for (const auto& [fn, ctx] : r.listeners) fn(ctx, start, end);
  }
  errno = saved_errno;
  return rc;
}

PAGEWISE_INTERPOSER int mprotect(void* addr, size_t len, int prot) {
  pi::Registry& r = pi::GetRegistry();
  if (r.active.load(std::memory_order_acquire) == 0) {
    return pagewise::sys::RawMprotect(addr, len, prot);
  }
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != nullptr) {
    return r.interceptor->mprotect(r.interceptor->ctx, addr, len, prot);
  }
  return pagewise::sys::RawMprotect(addr, len, prot);
}

PAGEWISE_INTERPOSER void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, ...) {
  void* new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  pi::Registry& r = pi::GetRegistry();
  if (r.active.load(std::memory_order_acquire) == 0) {
    return pagewise::sys::RawMremap(old_addr, old_len, new_len, flags, new_addr);
  }
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != nullptr) {
    return r.interceptor->mremap(r.interceptor->ctx, old_addr, old_len, new_len, flags, new_addr);
  }
  return pagewise::sys::RawMremap(old_addr, old_len, new_len, flags, new_addr);
}
