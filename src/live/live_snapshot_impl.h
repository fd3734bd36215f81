// LiveSnapshotImpl: the LiveSnapshot behind the public API.
//
// Threads: the caller (Start, Wait, Cancel, progress, stats), the saver
// (SaverMain: copies pages in address order, writes the image, then
// Finish), and in base mode the fault handler (FaultMain: serves
// write-protect faults from our userfaultfd). In tracker mode the tracker's
// own thread calls the fault hook instead.
//
// Thread safety: public methods may be called from any thread. Members set
// in Begin() are read-only afterwards; final_ is written by the saver before
// it exits and read after joining it; counters live in LiveCore.
#ifndef PAGEWISE_LIVE_LIVE_SNAPSHOT_IMPL_H_
#define PAGEWISE_LIVE_LIVE_SNAPSHOT_IMPL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "live/live_core.h"
#include "pagewise/image.h"
#include "pagewise/live.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"

namespace pagewise {
class UffdWpTracker;
namespace image {
class ImageWriterImpl;
}  // namespace image
}  // namespace pagewise

namespace pagewise::live {

struct TrackerHookState;

// Calls fn(first, count) for every run of set bits among bits [0, n).
void ForEachRun(const uint64_t* bits, uint64_t n,
                const std::function<void(uint64_t, uint64_t)>& fn);

class LiveSnapshotImpl final : public LiveSnapshot {
 public:
  // `env`: userfaultfd and scheduling calls; `image_env`: the image's file I/O.
  LiveSnapshotImpl(const LiveSnapshotOptions& options, Env* env, Env* image_env);
  ~LiveSnapshotImpl() override;

  // Everything up to T, then starts the saver. On error, nothing is left
  // registered or protected; the caller destroys the object (which removes
  // the temporary image).
  Status Begin(const std::string& path, const std::vector<Region>& regions);

  Status Wait() override;
  void Cancel() override;
  LiveProgress progress() const override;
  LiveSnapshotStats stats() const override;

 private:
  // Base mode (live_faults.cc): our own userfaultfd.
  Status BeginBase();
  void FaultMain();
  void ServeFault(uint64_t addr);
  // Clears write protection of [start, start+len) and wakes its waiters.
  Status Unprotect(uint64_t start, uint64_t len) const;
  // Stops the fault thread, then (failed: unprotects and) unregisters every
  // region and closes the userfaultfd. Problems go to *problems (may be
  // null); closing the userfaultfd releases everything regardless.
  void LiftAll(bool failed, std::string* problems);

  // Tracker mode (live_tracker.cc).
  Status BeginTracker();
  void EndTracker();

  // The saver (live_snapshot.cc).
  void SaverMain();
  Status SaveAll();
  Status SaveChunk(const LiveRegion& r, uint64_t first_page, uint64_t pages);
  // Hands the spilled pages (waiting for one if `wait` and none is there)
  // to the image writer in large batches and frees their spill buffers.
  Status DrainSpill(bool wait);
  void ReportProgress(bool done);
  void Finish(Status s);

  LiveSnapshotOptions opts_;
  Env* const env_;
  Env* const image_env_;
  size_t page_size_ = 4096;
  std::string path_;
  bool any_shared_ = false;
  std::shared_ptr<LiveCore> core_;
  std::unique_ptr<ImageWriter> writer_;

  image::ImageWriterImpl* writer_impl_ = nullptr;  // writer_, for staged hand-offs

  // Saver state (saver thread only).
  size_t chunk_pages_ = 0;
  std::vector<QueuedPage> queued_;
  uint64_t next_progress_ = 0;

  // Base mode.
  sys::Userfaultfd uffd_;
  std::vector<const LiveRegion*> registered_;
  std::unique_ptr<sys::UffdLoop> loop_;  // base mode: the fault thread's loop
  std::thread fault_thread_;
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  bool fault_thread_ready_ = false;

  // Tracker mode.
  UffdWpTracker* uffd_tracker_ = nullptr;
  std::shared_ptr<TrackerHookState> hook_state_;
  bool hook_installed_ = false;
  uint64_t sentinel_ = 0;  // the sentinel page (see live_tracker.cc)
  bool sentinel_tracked_ = false;

  std::thread saver_thread_;
  uint64_t start_ns_ = 0;
  std::atomic<uint64_t> protect_ns_{0};
  std::atomic<uint64_t> total_ns_{0};
  std::atomic<bool> finished_{false};
  std::mutex wait_mu_;
  Status final_;
};

}  // namespace pagewise::live

#endif  // PAGEWISE_LIVE_LIVE_SNAPSHOT_IMPL_H_
