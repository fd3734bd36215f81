// The trackers' side of libpagewise-interpose: listeners, the mprotect
// interceptor and the kernel-write opener, handed to the interposers' table
// when it is linked (memory_events.h, src/sys/interpose/interpose.h).
#include "track/memory_events.h"

#include <mutex>

#include "sys/interpose/interpose.h"
#include "track/kernel_writes.h"

// Weak: null unless libpagewise-interpose is part of the process. Default
// visibility, so that in the shared library the reference is resolved at load
// time against the executable, its libraries and LD_PRELOAD.
extern "C" __attribute__((weak, visibility("default"))) const struct pagewise_interpose_table_v1*
pagewise_interpose_v1(void);

namespace pagewise::track_internal {
namespace {

const pagewise_interpose_table_v1* Table() {
  static const pagewise_interpose_table_v1* const table =
      &pagewise_interpose_v1 != nullptr ? pagewise_interpose_v1() : nullptr;
  return table;
}

void CallOnDropped(void* ctx, uint64_t start, uint64_t end) {
  static_cast<MemoryEventListener*>(ctx)->OnDropped(start, end);
}

int CallMprotect(void* ctx, void* addr, size_t len, int prot) {
  return static_cast<MprotectInterceptor*>(ctx)->InterceptMprotect(addr, len, prot);
}

void* CallMremap(void* ctx, void* old_addr, size_t old_len, size_t new_len, int flags,
                 void* new_addr) {
  return static_cast<MprotectInterceptor*>(ctx)->InterceptMremap(old_addr, old_len, new_len, flags,
                                                                 new_addr);
}

// The one interceptor's C record (at most one is installed at a time).
std::mutex g_interceptor_mu;
pagewise_mprotect_interceptor g_interceptor{nullptr, CallMprotect, CallMremap};

}  // namespace

bool InterposersLinked() { return Table() != nullptr; }

void RegisterMemoryEventListener(MemoryEventListener* listener) {
  const pagewise_interpose_table_v1* t = Table();
  // Out of memory leaves the listener unregistered: its tracker then misses
  // drops the kernel hides, as without the interposers (documented there).
  if (t != nullptr) (void)t->add_drop_listener(CallOnDropped, listener);
}

void UnregisterMemoryEventListener(MemoryEventListener* listener) {
  if (const pagewise_interpose_table_v1* t = Table())
    t->remove_drop_listener(CallOnDropped, listener);
}

bool InstallMprotectInterceptor(MprotectInterceptor* interceptor) {
  const pagewise_interpose_table_v1* t = Table();
  if (t == nullptr) return false;
  std::lock_guard<std::mutex> lock(g_interceptor_mu);
  if (g_interceptor.ctx != nullptr) return false;
  g_interceptor.ctx = interceptor;
  if (t->install_mprotect_interceptor(&g_interceptor) != 0) {
    g_interceptor.ctx = nullptr;
    return false;
  }
  return true;
}

void RemoveMprotectInterceptor(MprotectInterceptor* interceptor) {
  const pagewise_interpose_table_v1* t = Table();
  if (t == nullptr) return;
  std::lock_guard<std::mutex> lock(g_interceptor_mu);
  if (g_interceptor.ctx != interceptor) return;
  t->remove_mprotect_interceptor(&g_interceptor);  // waits for calls in progress
  g_interceptor.ctx = nullptr;
}

void SetKernelWriteOpener(KernelWriteOpener opener) {
  if (const pagewise_interpose_table_v1* t = Table()) t->set_kernel_write_opener(opener);
}

}  // namespace pagewise::track_internal
