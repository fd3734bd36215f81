// The mprotect backend's fault path: the published ranges, SegvHandler and
// OpenForKernelWrite (see mprotect_fault.h, and mprotect.cc for why no write
// is lost).
//
// Everything the handler and the opener touch is process-lifetime state read
// without locks: the slots, the in-flight count and the ranges' bitmaps and
// protection bytes (their own mappings). The calls they make are
// async-signal-safe: sys::RawMprotect and sys/signal_handler.h.
#include "track/mprotect_fault.h"

#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "sys/raw_mm.h"
#include "sys/signal_handler.h"

namespace pagewise::track_internal {
namespace {

// Process-wide state shared with the signal handler.
std::atomic<MpRange*> g_slots[kMaxMprotectRanges];
std::atomic<int> g_in_flight{0};    // handlers that may be reading a slot's range
std::atomic<uint64_t> g_faults{0};  // write faults served, ever
// Slots at and above it have never held a range (lets OpenForKernelWrite
// scan only the used part of g_slots). Raised before publishing.
std::atomic<size_t> g_slot_limit{0};
struct sigaction g_previous;  // written before our handler is installed
std::atomic<bool> g_installed{false};

// Tries to make [start, end) have protection `prot`, where `fault_page` is
// the page that must become writable: the page alone first; if the kernel
// refuses (ENOMEM: per-page unprotects have split the range into too many
// VMAs), the 2 MiB window around it, then the whole run of pages with the
// same user protection, which lets the kernel merge VMAs. Every page made
// writable gets its bit set afterwards (see the invariant in mprotect.cc).
bool GrantWrite(MpRange* r, size_t page_index, int prot) {
  const uint64_t pg = PageSize();
  const uint64_t addr = r->start + page_index * pg;
  if (sys::RawMprotect(reinterpret_cast<void*>(addr), pg, prot) == 0) {
    r->bits.Set(page_index);
    return true;
  }
  if (errno != ENOMEM) return false;
  const size_t n = r->bits.pages();
  size_t lo = page_index, hi = page_index + 1;
  const size_t window = (2u << 20) / pg;
  const size_t wlo = page_index / window * window, whi = std::min(n, wlo + window);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const size_t min_lo = attempt == 0 ? wlo : 0, max_hi = attempt == 0 ? whi : n;
    while (lo > min_lo && r->Prot(lo - 1) == prot) --lo;
    while (hi < max_hi && r->Prot(hi) == prot) ++hi;
    if (sys::RawMprotect(reinterpret_cast<void*>(r->start + lo * pg), (hi - lo) * pg, prot) == 0) {
      r->bits.SetRange(lo, hi);
      return true;
    }
  }
  return false;
}

void ChainToPrevious(int sig, siginfo_t* info, void* uctx) {
  const struct sigaction& prev = g_previous;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, uctx);
    return;
  }
  if (prev.sa_handler == SIG_IGN || prev.sa_handler == SIG_DFL) {
    // Restore the default action and let the fault happen again (a real
    // fault re-executes the instruction; a signal sent by kill/raise is
    // raised again). The kernel kills a process that ignores a fault-made
    // SIGSEGV too, so SIG_IGN is treated like SIG_DFL.
    sys::SetDefaultSignalAction(sig);
    if (info->si_code <= 0) sys::RaiseSignal(sig);
    return;
  }
  prev.sa_handler(sig);
}

void SegvHandler(int sig, siginfo_t* info, void* uctx) {
  const int saved_errno = errno;
  bool handled = false;
  if (info->si_code == SEGV_ACCERR) {
    const uint64_t addr = reinterpret_cast<uint64_t>(info->si_addr);
    g_in_flight.fetch_add(1, std::memory_order_seq_cst);
    for (size_t i = 0; i < kMaxMprotectRanges && !handled; ++i) {
      MpRange* r = g_slots[i].load(std::memory_order_seq_cst);
      if (r == nullptr || addr < r->start || addr >= r->end) continue;
      const size_t page = (addr - r->start) / PageSize();
      const int prot = r->Prot(page);
      // Only a page the program may write is ours; a write to a page the
      // program made read-only (or PROT_NONE) is its own fault.
      if (prot & PROT_WRITE) handled = GrantWrite(r, page, prot);
      if (handled) g_faults.fetch_add(1, std::memory_order_relaxed);
      if (!handled && (prot & PROT_WRITE)) {
        static const char kMsg[] =
            "pagewise: mprotect tracker could not make a written page writable again; "
            "passing the fault on\n";
        (void)sys::SignalSafeWrite(2, kMsg, sizeof(kMsg) - 1);
      }
      break;
    }
    g_in_flight.fetch_sub(1, std::memory_order_seq_cst);
  }
  errno = saved_errno;
  if (!handled) ChainToPrevious(sig, info, uctx);
}

}  // namespace

size_t FreeMprotectSlot() {
  for (size_t i = 0; i < kMaxMprotectRanges; ++i) {
    if (g_slots[i].load() == nullptr) return i;
  }
  return kMaxMprotectRanges;
}

void PublishRange(size_t slot, MpRange* r) {
  if (g_slot_limit.load() < slot + 1) g_slot_limit.store(slot + 1);  // before publishing
  g_slots[slot].store(r, std::memory_order_seq_cst);
}

void UnpublishRange(MpRange* r) {
  for (auto& slot : g_slots) {
    MpRange* expected = r;
    slot.compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst);
  }
  // A handler that loaded the pointer before it was cleared is counted in
  // g_in_flight; wait for it before the range's memory goes away.
  while (g_in_flight.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
}

void ForgetMprotectSlots() { g_slot_limit.store(0, std::memory_order_release); }

uint64_t MprotectFaultsServed() { return g_faults.load(std::memory_order_relaxed); }

Status InstallFaultHandler() {
  if (g_installed.load()) return Status::Ok();
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = SegvHandler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  struct sigaction prev;
  PW_RETURN_IF_ERROR(sys::GetSignalAction(SIGSEGV, &prev));
  g_previous = prev;  // before ours can run
  PW_RETURN_IF_ERROR(sys::SetSignalAction(SIGSEGV, sa));
  g_installed.store(true);
  return Status::Ok();
}

void RemoveFaultHandler() {
  struct sigaction cur;
  if (sys::GetSignalAction(SIGSEGV, &cur).ok() && (cur.sa_flags & SA_SIGINFO) &&
      cur.sa_sigaction == SegvHandler) {
    sys::SetSignalAction(SIGSEGV, g_previous).IgnoreError();  // best effort, as documented
    g_installed.store(false);
  }
}

// Before a read-family call lets the kernel store into [start, end),
// write-fault every tracked page of it that the program may write, with an
// atomic no-op write of the page's first byte inside [start, end). The fault
// takes the path of any other first write: SegvHandler records the page and
// makes it writable, so the kernel's copy succeeds and the next collect
// reports the page. Pages the program itself keeps without PROT_WRITE are
// left alone (the kernel's EFAULT is the program's own), and so is untracked
// memory. Pages are opened last to first: the kernel copies first to last,
// so the page it needs first is the one opened last, and a collect that
// re-protects an earlier-opened page in between costs a short count rather
// than an EFAULT. Like the handler, it reads the published ranges under
// g_in_flight.
size_t OpenForKernelWrite(uint64_t start, uint64_t end) {
  const size_t limit = g_slot_limit.load(std::memory_order_acquire);
  if (limit == 0 || start >= end) return 0;
  const uint64_t pg = PageSize();
  size_t opened = 0;
  g_in_flight.fetch_add(1, std::memory_order_seq_cst);
  MpRange* r = nullptr;  // the range holding the current page, if any
  uint64_t page = (end - 1) & ~(pg - 1);
  while (true) {
    if (r == nullptr || page < r->start || page >= r->end) {
      // Find the range holding `page`, or else skip down to the end of the
      // nearest range below it (untracked stretches cost one scan each).
      r = nullptr;
      uint64_t below = 0;
      for (size_t i = 0; i < limit && r == nullptr; ++i) {
        MpRange* c = g_slots[i].load(std::memory_order_seq_cst);
        if (c == nullptr) continue;
        if (page >= c->start && page < c->end) r = c;
        if (c->end <= page) below = std::max(below, c->end);
      }
      if (r == nullptr) {
        if (below <= start) break;
        page = below - pg;
        continue;
      }
    }
    if (r->Prot((page - r->start) / pg) & PROT_WRITE) {
      AtomicNoOpWrite(reinterpret_cast<void*>(std::max(page, start)));
      ++opened;
    }
    if (page <= start) break;
    page -= pg;
  }
  g_in_flight.fetch_sub(1, std::memory_order_seq_cst);
  return opened;
}

}  // namespace pagewise::track_internal
