// WriteScanBaseline: the bare kernel primitive under the uffd-wp-async tracker
// (PAGEMAP_SCAN "written" + PM_SCAN_WP_MATCHING on async write-protected
// memory), exposed for benchmarks and diagnostics that need a same-run
// baseline for Tracker::Collect(). It is not a tracker: no contract beyond
// what the kernel does in one scan, no locking of ranges, no coalescing.
//
// Thread safety: one scanner is used from one thread at a time. Memory it
// armed may be written from any thread.
#ifndef PAGEWISE_SYS_SCAN_BASELINE_H_
#define PAGEWISE_SYS_SCAN_BASELINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "pagewise/status.h"
#include "pagewise/tracker.h"
#include "sys/env.h"

namespace pagewise {

class WriteScanBaseline {
 public:
  // Opens /proc/self/pagemap (and, lazily in Arm(), a userfaultfd) through
  // `env` (nullptr: Env::Default()). `batch` is how many regions one ioctl
  // may return before the scan resumes at walk_end. kNotSupported if this
  // kernel lacks PAGEMAP_SCAN or async write-protect.
  static Result<std::unique_ptr<WriteScanBaseline>> Open(Env* env = nullptr, size_t batch = 65536);

  ~WriteScanBaseline();
  WriteScanBaseline(const WriteScanBaseline&) = delete;
  WriteScanBaseline& operator=(const WriteScanBaseline&) = delete;

  // Registers [addr, addr+len) (page aligned, anonymous or shmem, mapped
  // read-write) with this scanner's own userfaultfd for async write-protect
  // and write-protects it: from now on only pages written afterwards read as
  // written. The range must not be tracked by a Tracker or armed twice (a
  // mapping has at most one userfaultfd). Unregistered when the scanner is
  // destroyed (the memory stays mapped; the caller owns it).
  Status Arm(void* addr, size_t len);

  // One pass over [addr, addr+len): reports the pages written since they
  // were last write-protected and write-protects them in the same step,
  // resuming at walk_end until the whole range is walked. Appends the
  // regions exactly as the kernel returned them to *out (may be null) and
  // returns the number of pages reported. Works on any range registered for
  // async write-protect, including one a uffd-wp-async Tracker tracks (the
  // tracker then never sees those writes: benchmarks only).
  Result<uint64_t> ScanWritten(void* addr, size_t len, std::vector<PageRange>* out);

 private:
  struct Impl;
  explicit WriteScanBaseline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pagewise

#endif  // PAGEWISE_SYS_SCAN_BASELINE_H_
