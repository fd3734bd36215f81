// Removal of live temporary files when the process is interrupted.
//
// AtomicFile (src/base/atomic_file.h) registers each temporary file here
// while it exists. The first registration installs a handler for SIGINT,
// SIGTERM and SIGHUP that unlinks every registered path and then does what
// the previous disposition said: a default disposition is restored and the
// signal re-raised (the process still dies of it, with the usual status),
// an ignored signal stays ignored, a previous handler is called. A program
// that installs its own handler for these signals afterwards replaces ours
// (its temporary files then outlive an interrupt); one that blocks them
// and takes them with sigwait (pagewise serve) is not affected.
//
// The registry is a fixed table of kSlots paths, each at most kMaxPath
// bytes, stored absolute (a later chdir does not redirect the unlink).
// Registration, removal and the handler are lock-free; the handler only
// calls unlink(2) on paths whose slot did not change while it read them.
//
// Thread safety: all functions are safe from any thread; the handler is
// async-signal-safe.
#ifndef PAGEWISE_SYS_TEMP_CLEANUP_H_
#define PAGEWISE_SYS_TEMP_CLEANUP_H_

#include <cstddef>
#include <string>

#include "pagewise/status.h"

namespace pagewise::sys {

inline constexpr size_t kTempSlots = 128;
inline constexpr size_t kTempMaxPath = 4096;

// Registers `path` for removal on SIGINT/SIGTERM/SIGHUP; returns the slot
// to pass to UnregisterTempFile. Errors: kResourceExhausted when kSlots
// files are registered already, kInvalidArgument for a path too long,
// getcwd's error for a relative path.
Result<int> RegisterTempFile(const std::string& path);

// Forgets slot `slot` (from RegisterTempFile; -1 is ignored). Call it once
// the file is gone or renamed to its final name.
void UnregisterTempFile(int slot);

// Paths registered now (for tests).
size_t RegisteredTempFiles();

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_TEMP_CLEANUP_H_
