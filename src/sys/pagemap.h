// PagemapScanner: the PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap, with
// walk_end resumption.
//
// One ioctl stops early when its output vector is full or max_pages is
// reached; ScanAll() resumes from walk_end until the range is done (or the
// page budget is spent), merging regions that touch across calls. With
// PM_SCAN_WP_MATCHING the kernel write-protects exactly the pages it reports,
// under the page-table lock, so stopping early and resuming loses nothing:
// pages past walk_end keep their written state for the next call.
//
// Thread safety: ScanOnce/ScanAll may run concurrently from several threads
// (each is an independent ioctl on the shared fd). Move-only; owns the fd.
#ifndef PAGEWISE_SYS_PAGEMAP_H_
#define PAGEWISE_SYS_PAGEMAP_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::sys {

// PAGE_IS_* categories, mirrored for code that does not include uapi.h.
namespace page_is {
inline constexpr uint64_t kWpAllowed = 1 << 0;
inline constexpr uint64_t kWritten = 1 << 1;
inline constexpr uint64_t kFile = 1 << 2;
inline constexpr uint64_t kPresent = 1 << 3;
inline constexpr uint64_t kSwapped = 1 << 4;
inline constexpr uint64_t kPfnZero = 1 << 5;
inline constexpr uint64_t kHuge = 1 << 6;
inline constexpr uint64_t kSoftDirty = 1 << 7;
}  // namespace page_is

inline constexpr uint64_t kScanWpMatching = 1 << 0;    // PM_SCAN_WP_MATCHING
inline constexpr uint64_t kScanCheckWpAsync = 1 << 1;  // PM_SCAN_CHECK_WPASYNC

class PagemapScanner {
 public:
  // Opens /proc/<pid>/pagemap (0: self). Does not check that PAGEMAP_SCAN
  // exists; the first scan reports kNotSupported (ENOTTY) if it does not.
  static Result<PagemapScanner> Open(Env* env = nullptr, pid_t pid = 0);

  PagemapScanner() = default;
  PagemapScanner(PagemapScanner&& o) noexcept : fd_(o.fd_), env_(o.env_) { o.fd_ = -1; }
  PagemapScanner& operator=(PagemapScanner&& o) noexcept;
  PagemapScanner(const PagemapScanner&) = delete;
  PagemapScanner& operator=(const PagemapScanner&) = delete;
  ~PagemapScanner();

  int fd() const { return fd_; }

  // One ioctl, exactly as the kernel answers.
  Result<PagemapScanOut> ScanOnce(const PagemapScanArgs& args, PageRegion* vec,
                                  size_t vec_len) const;

  // Scans args.start..args.end to completion, resuming at walk_end, and
  // appends the regions to *out (adjacent regions with equal categories are
  // merged). args.max_pages, if non-zero, is a budget for the whole call: the
  // scan stops once that many pages were reported, and *walk_end (optional)
  // says where. `vec_len` is the per-ioctl batch. On error, *out holds what
  // was reported before the error (with WP_MATCHING those pages were
  // re-armed, so callers must still consume them).
  Status ScanAll(const PagemapScanArgs& args, std::vector<PageRegion>* out,
                 uint64_t* walk_end = nullptr, size_t vec_len = 1024) const;

 private:
  PagemapScanner(int fd, Env* env) : fd_(fd), env_(env) {}
  int fd_ = -1;
  Env* env_ = nullptr;
};

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_PAGEMAP_H_
