// Maps and smaps: what the kernel says about the mappings of a process, the
// one parser of /proc/<pid>/maps and /proc/<pid>/smaps in pagewise. maps
// gives each VMA's range, permissions and backing file (ReadMaps: the
// trackers' and snapshots' views of /proc/self/maps are built on it);
// smaps adds each VMA's page size (KernelPageSize: 2 MiB or 1 GiB
// for hugetlbfs), its VmFlags (ht: hugetlbfs, sh: shared, um/uw/ui:
// registered with a userfaultfd in MISSING/WP/MINOR mode) and its backing
// file (device, inode, path).
//
// Used where the memory kind decides what is allowed: the trackers (huge
// page alignment), snapshots and images (the page size to record), the
// restore engine and the page server (a client's page size and
// registration mode must match what its handshake claims). Reading smaps
// walks the page tables of every VMA it prints, so callers read it once
// per operation, not per page; ReadMappings only parses what overlaps the
// asked range. Shared-memory classification (MappingInfo::IsShmemPath) is
// here too, for the same reason: one place decides what a path means.
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_SYS_SMAPS_H_
#define PAGEWISE_SYS_SMAPS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::sys {

struct MappingInfo {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t page_size = 0;  // KernelPageSize, bytes
  bool shared = false;     // 's' in the permissions
  bool readable = false, writable = false, executable = false;
  uint64_t offset = 0;  // file offset of start
  uint64_t dev_major = 0, dev_minor = 0, inode = 0;
  std::string path;      // "" for anonymous memory
  std::string vm_flags;  // the VmFlags line, e.g. "rd wr mr mw me ac sd ht um"
  bool hugetlb() const { return HasFlag("ht"); }
  bool uffd_missing() const { return HasFlag("um"); }
  bool uffd_wp() const { return HasFlag("uw"); }
  bool uffd_minor() const { return HasFlag("ui"); }
  // True if the two-letter flag appears in vm_flags.
  bool HasFlag(const char* flag) const;
  // PROT_READ | PROT_WRITE | PROT_EXEC from the permissions.
  int prot() const;
  // Shared memory backed by shmem: a memfd, MAP_SHARED|MAP_ANONYMOUS
  // ("/dev/zero"), SysV shm, or a file in /dev/shm.
  bool shmem() const { return shared && IsShmemPath(path); }
  // True if `path` (a maps path column) names a shmem object as above.
  static bool IsShmemPath(const std::string& path);
};

// Parses a VMA header line of /proc/<pid>/maps or smaps ("start-end perms
// offset major:minor inode [path]") into the fields it carries (not
// page_size or vm_flags). False if the line is not one (or end <= start).
bool ParseMapsLine(const std::string& line, MappingInfo* m);

// Every VMA of process `pid` (0: this process) from /proc/<pid>/maps,
// which is cheaper than smaps (no page-table walk): page_size and
// vm_flags stay unset. Sorted by address, as the kernel prints them.
// Errors: the file cannot be read (kNotFound when the process is gone), or
// kInternal on a line that does not parse (quoted, with a request to
// report the kernel's format).
Result<std::vector<MappingInfo>> ReadMaps(Env* env, pid_t pid);

// The whole text of a /proc file (which reports size 0: read to the end),
// through env (tests inject failures). Errors name the path.
Result<std::string> ReadProcText(Env* env, const std::string& path);

// The VMAs of process `pid` (0: this process) that overlap [start, end),
// sorted. Errors: the smaps file cannot be read (kNotFound when the
// process is gone, kPermissionDenied without ptrace read access).
Result<std::vector<MappingInfo>> ReadMappings(Env* env, pid_t pid, uint64_t start, uint64_t end);

// The largest page size of the VMAs covering [start, end) of this process,
// checked: every VMA in the range has the same page size, the range is
// aligned to it, and no byte is unmapped. kInvalidArgument naming the
// cause and the fix (`op` names the operation) otherwise.
Result<uint64_t> RangePageSize(Env* env, uint64_t start, uint64_t end, const char* op);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_SMAPS_H_
