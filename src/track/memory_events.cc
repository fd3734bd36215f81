// The madvise/mprotect interposers and their listener registry.
#include "track/memory_events.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <mutex>
#include <vector>

#include "sys/env.h"
#include "sys/raw_mm.h"

namespace pagewise::track_internal {
namespace {

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif
constexpr int kMadvGuardInstall = 102;  // Linux 6.13: zaps the pages too

struct Registry {
  std::mutex mu;
  std::vector<MemoryEventListener*> listeners;
  MprotectInterceptor* interceptor = nullptr;
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

}  // namespace

void RegisterMemoryEventListener(MemoryEventListener* listener) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.listeners.push_back(listener);
  r.active.fetch_add(1, std::memory_order_release);
}

void UnregisterMemoryEventListener(MemoryEventListener* listener) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = std::find(r.listeners.begin(), r.listeners.end(), listener);
  if (it == r.listeners.end()) return;
  r.listeners.erase(it);
  r.active.fetch_sub(1, std::memory_order_release);
}

bool InstallMprotectInterceptor(MprotectInterceptor* interceptor) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != nullptr) return false;
  r.interceptor = interceptor;
  r.active.fetch_add(1, std::memory_order_release);
  return true;
}

void RemoveMprotectInterceptor(MprotectInterceptor* interceptor) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != interceptor) return;
  r.interceptor = nullptr;
  r.active.fetch_sub(1, std::memory_order_release);
}

}  // namespace pagewise::track_internal

using pagewise::track_internal::DropsPages;
using pagewise::track_internal::GetRegistry;
using pagewise::track_internal::Registry;

// The interposers. They replace libc's symbols for every caller in this
// process that links pagewise (the executable's definition wins over
// libc.so's), and reach the kernel through raw syscalls.
extern "C" int madvise(void* addr, size_t len, int advice) {
  const int rc = pagewise::sys::RawMadvise(addr, len, advice);
  Registry& r = GetRegistry();
  if (rc != 0 || !DropsPages(advice) || r.active.load(std::memory_order_acquire) == 0) return rc;
  const int saved_errno = errno;
  const uint64_t page = pagewise::PageSize();
  const uint64_t start = reinterpret_cast<uint64_t>(addr) & ~(page - 1);
  const uint64_t end = (reinterpret_cast<uint64_t>(addr) + len + page - 1) & ~(page - 1);
  {
    std::lock_guard<std::mutex> lock(r.mu);
    for (pagewise::track_internal::MemoryEventListener* l : r.listeners) l->OnDropped(start, end);
  }
  errno = saved_errno;
  return rc;
}

extern "C" int mprotect(void* addr, size_t len, int prot) {
  Registry& r = GetRegistry();
  if (r.active.load(std::memory_order_acquire) == 0) {
    return pagewise::sys::RawMprotect(addr, len, prot);
  }
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != nullptr) return r.interceptor->InterceptMprotect(addr, len, prot);
  return pagewise::sys::RawMprotect(addr, len, prot);
}

extern "C" void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, ...) {
  void* new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  Registry& r = GetRegistry();
  if (r.active.load(std::memory_order_acquire) == 0) {
    return pagewise::sys::RawMremap(old_addr, old_len, new_len, flags, new_addr);
  }
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.interceptor != nullptr) {
    return r.interceptor->InterceptMremap(old_addr, old_len, new_len, flags, new_addr);
  }
  return pagewise::sys::RawMremap(old_addr, old_len, new_len, flags, new_addr);
}
