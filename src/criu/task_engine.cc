// TaskEngine over restore::Engine (see task_engine.h). Kept small on
// purpose: the engine's internal API is being reshaped, and this file is
// the only one that follows it.
#include "criu/task_engine.h"

#include <utility>

#include "restore/engine.h"
#include "sys/userfaultfd.h"

namespace pagewise::criu {
namespace {

class EngineTask final : public TaskEngine {
 public:
  explicit EngineTask(std::unique_ptr<restore::Engine> e) : engine_(std::move(e)) {}
  ~EngineTask() override { Stop(); }

  bool done() const override { return engine_->resident() || engine_->Stats().spaces_live == 0; }
  bool resident() const override { return engine_->resident(); }
  Status status() const override { return engine_->status(); }
  RestoreStats stats() const override { return engine_->Stats(); }
  WorkingSetTrace trace() const override { return engine_->Trace(); }
  void EnableBackground() override { engine_->EnableBackground(); }
  void Stop() override { engine_->Stop(); }

 private:
  std::unique_ptr<restore::Engine> engine_;
};

}  // namespace

Result<std::unique_ptr<TaskEngine>> TaskEngine::Start(int uffd,
                                                      const std::vector<DumpRegion>& regions,
                                                      std::shared_ptr<const PageSource> source,
                                                      const TaskEngineOptions& o) {
  restore::EngineOptions eo;
  eo.fill.fault_window_pages = o.fault_window_pages;
  eo.fill.background_batch_pages = o.background_batch_pages;
  // Background fill waits for EnableBackground(): CRIU hands the
  // userfaultfd over BEFORE its restorer registers the lazy areas, and a
  // copy into a range not yet registered fails with ENOENT (a page given
  // up on would later read as zero). Faults only come from registered
  // ranges, so demand serving is safe at once. A prefetch list starts at
  // once: its ENOENTs are waited out (the engine keeps retrying for a few
  // seconds when the descriptor has EVENT_UNMAP and EVENT_REMAP, as
  // CRIU's does), and registration follows within milliseconds.
  eo.fill.background_fill = false;
  eo.fill.record_trace = o.record_trace;
  eo.fill.prefetch = o.prefetch;
  // Once every page is in place the userfaultfd is closed, as CRIU's own
  // daemon does: the kernel unregisters the ranges, nothing changes for
  // the task.
  eo.release_when_resident = true;
  if (o.on_change) {
    auto cb = o.on_change;
    eo.on_resident = [cb](const Status&, const RestoreStats&) { cb(); };
    eo.on_finished = [cb](const Status&) { cb(); };
  }
  std::vector<restore::SpaceRegion> space;
  for (const DumpRegion& r : regions) space.push_back({r.address, r.length, r.flat_offset});
  auto engine = std::make_unique<restore::Engine>(std::move(source), std::move(eo));
  // CRIU did UFFDIO_API with EVENT_FORK|REMAP|UNMAP|REMOVE (criu/uffd.c
  // requires all four of the kernel).
  engine->AddSpace(sys::Userfaultfd::Adopt(uffd, sys::Userfaultfd::NonCooperativeEvents()), space);
  PW_RETURN_IF_ERROR(engine->Start().WithContext("starting the task's page server"));
  return std::unique_ptr<TaskEngine>(std::make_unique<EngineTask>(std::move(engine)));
}

}  // namespace pagewise::criu
