// TaskEngine: the one place where CRIU integration uses the restore
// engine (src/restore/engine.h). One TaskEngine serves one restored task:
// the userfaultfd CRIU handed over (UFFDIO_API done, lazy VMAs
// registered) and the task's lazy regions, from a PageSource holding the
// dump's flat view. Children the task forks are served by the same engine
// (UFFD_EVENT_FORK).
//
// Thread safety: methods may be called from any thread; callbacks run on
// the engine's threads.
#ifndef PAGEWISE_CRIU_TASK_ENGINE_H_
#define PAGEWISE_CRIU_TASK_ENGINE_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <vector>

#include "criu/dump.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"

namespace pagewise::criu {

struct TaskEngineOptions {
  size_t fault_window_pages = 16;
  size_t background_batch_pages = 256;
  bool record_trace = false;
  std::vector<uint64_t> prefetch;   // flat offsets of this task's pages
  std::function<void()> on_change;  // resident, failed or finished
};

class TaskEngine {
 public:
  // Takes `uffd` (closed on failure too). Regions must be this task's lazy
  // regions.
  static Result<std::unique_ptr<TaskEngine>> Start(int uffd, const std::vector<DumpRegion>& regions,
                                                   std::shared_ptr<const PageSource> source,
                                                   const TaskEngineOptions& options);
  virtual ~TaskEngine() = default;  // Stop()
  // Every page of every space is resident, or every space is gone.
  virtual bool done() const = 0;
  virtual bool resident() const = 0;
  virtual Status status() const = 0;  // first error (a source read that failed...)
  virtual RestoreStats stats() const = 0;
  virtual WorkingSetTrace trace() const = 0;
  // Starts the background filler (off at first: see task_engine.cc). The
  // daemon calls it at the end of the restore, or when the task exited
  // (pages of its forked children get filled, dead address spaces are
  // found through ESRCH).
  virtual void EnableBackground() = 0;
  // Stops serving and closes the userfaultfds. Pages still missing would
  // then read as zero in a live task: callers kill such tasks first.
  virtual void Stop() = 0;
};

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_TASK_ENGINE_H_
