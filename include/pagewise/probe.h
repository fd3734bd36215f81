// Kernel feature probe: what this kernel offers pagewise, found once.
//
// ProbeKernel() asks the kernel directly (a throwaway userfaultfd handshake,
// a PAGEMAP_SCAN call, a soft-dirty round trip, THP settings) and never
// guesses from version numbers. Features() caches the answer for the process.
// Callers state what they need with Require(), which turns a missing feature
// into kNotSupported naming the feature and the fix.
//
// Thread safety: Features() is safe from any thread (initialised once);
// KernelFeatures is a plain value.
#ifndef PAGEWISE_PROBE_H_
#define PAGEWISE_PROBE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// userfaultfd feature bits (UFFD_FEATURE_*), mirrored so that public code
// needs no kernel header.
namespace uffd_feature {
inline constexpr uint64_t kPagefaultFlagWp = 1ULL << 0;
inline constexpr uint64_t kEventFork = 1ULL << 1;
inline constexpr uint64_t kEventRemap = 1ULL << 2;
inline constexpr uint64_t kEventRemove = 1ULL << 3;
inline constexpr uint64_t kMissingHugetlbfs = 1ULL << 4;
inline constexpr uint64_t kMissingShmem = 1ULL << 5;
inline constexpr uint64_t kEventUnmap = 1ULL << 6;
inline constexpr uint64_t kSigbus = 1ULL << 7;
inline constexpr uint64_t kThreadId = 1ULL << 8;
inline constexpr uint64_t kMinorHugetlbfs = 1ULL << 9;
inline constexpr uint64_t kMinorShmem = 1ULL << 10;
inline constexpr uint64_t kExactAddress = 1ULL << 11;
inline constexpr uint64_t kWpHugetlbfsShmem = 1ULL << 12;
inline constexpr uint64_t kWpUnpopulated = 1ULL << 13;
inline constexpr uint64_t kPoison = 1ULL << 14;
inline constexpr uint64_t kWpAsync = 1ULL << 15;
inline constexpr uint64_t kMove = 1ULL << 16;
inline constexpr int kCount = 17;
}  // namespace uffd_feature

// Name of one feature bit ("WP_ASYNC", "EVENT_FORK", ...), or "BIT<n>".
std::string UffdFeatureName(uint64_t bit);
// Names of every bit set in `features`, lowest first.
std::vector<std::string> UffdFeatureNames(uint64_t features);

// ---- memory kinds -------------------------------------------------------------
// What userfaultfd can do with each kind of memory besides private anonymous
// 4 KiB pages, found by registering a scratch mapping of that kind in that
// mode and checking which ioctls the kernel then allows on it.
enum class MemoryCapability {
  kMissingHugetlbfs,  // MISSING faults on hugetlbfs, filled by UFFDIO_COPY (whole huge pages)
  kMissingShmem,      // MISSING faults on shmem/memfd, filled by UFFDIO_COPY
  kMinorHugetlbfs,    // MINOR faults on hugetlbfs, page-cache pages mapped by UFFDIO_CONTINUE
  kMinorShmem,        // MINOR faults on shmem/memfd (UFFDIO_CONTINUE)
  kWpHugetlbfsShmem,  // write-protect (and WP_ASYNC tracking) of hugetlbfs and shmem
  kMove,              // UFFDIO_MOVE of anonymous pages (whole THPs when PMD-mapped)
};
inline constexpr int kMemoryCapabilityCount = 6;
// "MISSING_HUGETLBFS", "MISSING_SHMEM", "MINOR_HUGETLBFS", "MINOR_SHMEM",
// "WP_HUGETLBFS_SHMEM", "MOVE" (the userfaultfd feature names).
std::string_view MemoryCapabilityName(MemoryCapability c);

struct MemoryKindSupport {
  MemoryCapability capability = MemoryCapability::kMove;
  bool supported = false;
  std::string memory;  // the kinds it covers ("hugetlbfs (MAP_HUGETLB, memfd MFD_HUGETLB)")
  std::string reason;  // why not (empty when supported)
};

// One hugetlbfs pool (/sys/kernel/mm/hugepages/hugepages-<size>kB/).
struct HugePagePoolInfo {
  uint64_t page_size = 0;  // bytes
  uint64_t total = 0;      // nr_hugepages
  uint64_t free = 0;       // free_hugepages (includes reserved ones)
  uint64_t reserved = 0;   // resv_hugepages: promised to mappings, not yet faulted
  uint64_t surplus = 0;    // surplus_hugepages
  // Pages a new mapping can still get.
  uint64_t available() const { return free > reserved ? free - reserved : 0; }
};

struct KernelFeatures {
  std::string kernel_release;  // uname -r

  // userfaultfd
  bool uffd_available = false;
  bool uffd_dev_node = false;  // /dev/userfaultfd usable
  uint64_t uffd_features = 0;  // what UFFDIO_API granted when asked for all
  uint64_t uffd_ioctls = 0;    // UFFDIO_API ioctls bitmask
  std::string uffd_reason;     // why unavailable (empty when available)

  // PAGEMAP_SCAN ioctl on /proc/self/pagemap
  bool pagemap_scan = false;
  std::string pagemap_scan_reason;

  // soft-dirty: clear_refs "4" plus pagemap bit 55 actually setting on write
  bool soft_dirty = false;
  std::string soft_dirty_reason;

  // transparent huge pages: "always", "madvise" or "never"
  std::string thp_mode;
  uint64_t thp_size = 0;  // PMD size in bytes (0 when unknown)
  // THP for shmem/memfd: /sys/kernel/mm/transparent_hugepage/shmem_enabled
  // ("always", "within_size", "advise", "never", "deny", "force").
  std::string thp_shmem_mode;

  // Memory kinds, one entry per MemoryCapability, in enum order.
  std::vector<MemoryKindSupport> memory_kinds;
  // The default hugetlbfs page size (/proc/meminfo Hugepagesize; 0: none)
  // and every pool, smallest page size first (as found at probe time; use
  // ReadHugePagePool for current counts).
  uint64_t default_huge_page_size = 0;
  std::vector<HugePagePoolInfo> huge_page_pools;

  bool HasUffd(uint64_t bits) const { return uffd_available && (uffd_features & bits) == bits; }
  // The entry for `c` (always present after ProbeKernel).
  const MemoryKindSupport& kind(MemoryCapability c) const;
  bool Supports(MemoryCapability c) const;
};

// Probes the kernel now (a few system calls; no caching). Never fails:
// unavailable features are recorded with a reason.
KernelFeatures ProbeKernel();

// The process-wide probe, run once.
const KernelFeatures& Features();

// OK if `features` has all `bits` of userfaultfd; otherwise kNotSupported
// naming the missing features, `what` needs them for, and the fix.
Status RequireUffd(const KernelFeatures& features, uint64_t bits, std::string_view what);
// OK if PAGEMAP_SCAN works; otherwise kNotSupported with the reason.
Status RequirePagemapScan(const KernelFeatures& features, std::string_view what);

// OK if the kernel supports `c`; otherwise kNotSupported naming the
// capability, the probe's reason and `what` needs it for.
Status RequireMemoryKind(const KernelFeatures& features, MemoryCapability c, std::string_view what);

// The current counters of the pool of `page_size` pages (read now, not
// cached). kNotFound when there is no pool of that size (the fix: a page
// size the kernel offers, see `pagewise probe`).
Result<HugePagePoolInfo> ReadHugePagePool(uint64_t page_size);
// OK if the pool of `page_size` pages has at least `pages` available now;
// otherwise kResourceExhausted saying how many are needed, how many there
// are, and how to add them (the nr_hugepages file to write).
Status RequireHugePages(uint64_t page_size, uint64_t pages, std::string_view what);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_PROBE_H_
