// The temporary-file registry and its SIGINT/SIGTERM/SIGHUP handler.
#include "sys/temp_cleanup.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "sys/files.h"
#include "sys/signal_handler.h"

namespace pagewise::sys {
namespace {

// state: generation << 2 | phase. A writer moves a slot kFree -> kBusy
// (claims it), writes the path, then kBusy -> kLive with a new generation;
// removal moves kLive -> kFree. The handler reads a live slot's path into
// its own buffer and unlinks it only if the state (hence generation) was
// the same before and after the copy, so it never acts on a half-written
// path.
constexpr uint64_t kFree = 0, kBusy = 1, kLive = 2;

struct Slot {
  std::atomic<uint64_t> state{kFree};
  char path[kTempMaxPath];
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the handler needs lock-free atomics");

Slot g_slots[kTempSlots];
std::atomic<size_t> g_live{0};

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[sizeof(kSignals) / sizeof(kSignals[0])];

void RemoveAll() {
  char local[kTempMaxPath];
  for (Slot& s : g_slots) {
    const uint64_t before = s.state.load(std::memory_order_acquire);
    if ((before & 3) != kLive) continue;
    std::memcpy(local, s.path, sizeof(local));
    // An acquire load (not a fence: GCC's TSan rejects fences) orders the
    // copy before the re-check, so an unchanged state means an intact copy.
    if (s.state.load(std::memory_order_acquire) != before) continue;
    local[kTempMaxPath - 1] = '\0';
    unlink(local);  // async-signal-safe; ENOENT (already renamed) is fine
  }
}

void OnSignal(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  RemoveAll();
  size_t i = 0;
  while (kSignals[i] != sig) ++i;
  const struct sigaction& prev = g_previous[i];
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
  } else if (prev.sa_handler == SIG_DFL) {
    // Die of the signal as we would have: default action, re-raised. It
    // is blocked while we run, so it is delivered when we return.
    SetDefaultSignalAction(sig);
    RaiseSignal(sig);
  } else if (prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
  }
  errno = saved_errno;
}

void InstallHandlers() {
  for (size_t i = 0; i < sizeof(kSignals) / sizeof(kSignals[0]); ++i) {
    struct sigaction sa = {};
    sa.sa_sigaction = OnSignal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int s : kSignals) sigaddset(&sa.sa_mask, s);  // one cleanup at a time
    sigaction(kSignals[i], &sa, &g_previous[i]);
    if ((g_previous[i].sa_flags & SA_SIGINFO) == 0 && g_previous[i].sa_handler == SIG_IGN) {
      // An ignored signal stays ignored (nohup, a shell's background job).
      sigaction(kSignals[i], &g_previous[i], nullptr);
    }
  }
}

}  // namespace

Result<int> RegisterTempFile(const std::string& path) {
  static std::once_flag once;
  std::call_once(once, InstallHandlers);
  std::string abs = path;
  if (abs.empty() || abs[0] != '/') {
    PW_ASSIGN_OR_RETURN(std::string cwd, CurrentDirectory());
    abs = cwd + "/" + path;
  }
  if (abs.size() >= kTempMaxPath) {
    return Status::InvalidArgument("temporary file path longer than " +
                                   std::to_string(kTempMaxPath - 1) + " bytes: " + abs);
  }
  for (size_t i = 0; i < kTempSlots; ++i) {
    Slot& s = g_slots[i];
    uint64_t st = s.state.load(std::memory_order_relaxed);
    if ((st & 3) != kFree) continue;
    if (!s.state.compare_exchange_strong(st, (st & ~uint64_t{3}) | kBusy)) continue;
    std::memcpy(s.path, abs.c_str(), abs.size() + 1);
    s.state.store(((st >> 2) + 1) << 2 | kLive, std::memory_order_release);
    g_live.fetch_add(1);
    return static_cast<int>(i);
  }
  return Status(Code::kResourceExhausted, 0,
                "more than " + std::to_string(kTempSlots) +
                    " temporary files open at once in this process (finish some first)");
}

void UnregisterTempFile(int slot) {
  if (slot < 0 || static_cast<size_t>(slot) >= kTempSlots) return;
  Slot& s = g_slots[slot];
  const uint64_t st = s.state.load(std::memory_order_relaxed);
  if ((st & 3) != kLive) return;
  s.state.store((st & ~uint64_t{3}) | kFree, std::memory_order_release);
  g_live.fetch_sub(1);
}

size_t RegisteredTempFiles() { return g_live.load(); }

}  // namespace pagewise::sys
