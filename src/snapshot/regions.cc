// Describing regions of this process: MakeRegion and /proc/self/maps.
#include <fcntl.h>
#include <sys/mman.h>

#include <cinttypes>
#include <cstdio>
#include <string>

#include "base/bytes.h"
#include "pagewise/snapshot.h"
#include "snapshot/internal.h"
#include "snapshot/snapshot_env.h"
#include "sys/smaps.h"

namespace pagewise {

Region MakeRegion(const void* addr, size_t len, RegionKind kind, uint32_t prot, std::string name) {
  Region r;
  r.address = reinterpret_cast<uint64_t>(addr);
  r.length = len;
  r.page_size = PageSize();
  r.prot = prot;
  r.kind = kind;
  r.name = std::move(name);
  return r;
}

namespace {

RegionKind KindOf(const MappingInfo& m) {
  const bool named_file = !m.path.empty() && m.path[0] == '/';
  if (m.shared) {
    if (!named_file || sys::MappingInfo::IsShmemPath(m.path)) {
      return RegionKind::kShared;
    }
    return RegionKind::kFile;
  }
  return named_file ? RegionKind::kFile : RegionKind::kAnonymous;
}

}  // namespace

Result<std::vector<MappingInfo>> ReadSelfMaps() { return ReadSelfMaps(Env::Default()); }

Result<std::vector<MappingInfo>> ReadSelfMaps(Env* env) {
  PW_ASSIGN_OR_RETURN(std::vector<sys::MappingInfo> maps, sys::ReadMaps(env, 0));
  std::vector<MappingInfo> out;
  out.reserve(maps.size());
  for (sys::MappingInfo& m : maps) {
    MappingInfo o;
    o.start = m.start;
    o.end = m.end;
    o.prot = static_cast<uint32_t>(m.prot());
    o.shared = m.shared;
    o.offset = m.offset;
    o.inode = m.inode;
    o.path = std::move(m.path);
    out.push_back(std::move(o));
  }
  return out;
}

Result<Region> RegionFromMaps(const void* addr, size_t len, std::string name) {
  return RegionFromMaps(addr, len, std::move(name), Env::Default());
}

Result<Region> RegionFromMaps(const void* addr, size_t len, std::string name, Env* env) {
  const uint64_t page = PageSize();
  const uint64_t start = reinterpret_cast<uint64_t>(addr);
  if (len == 0 || start % page != 0 || len % page != 0) {
    return Status::InvalidArgument("RegionFromMaps: [" + HexAddr(start) + ", +" +
                                   std::to_string(len) + ") must be non-empty and page aligned");
  }
  PW_ASSIGN_OR_RETURN(std::vector<MappingInfo> maps, ReadSelfMaps(env));
  const uint64_t end = start + len;
  uint64_t covered = start;
  Region r = MakeRegion(addr, len);
  r.prot = 0;
  bool first = true;
  for (const MappingInfo& m : maps) {
    if (m.end <= covered || m.start >= end) continue;
    if (m.start > covered) break;  // a hole before this mapping
    if (first) {
      r.kind = KindOf(m);
      r.name = name.empty() ? m.path : name;
      first = false;
    }
    r.prot |= m.prot;
    covered = m.end;
    if (covered >= end) break;
  }
  if (covered < end) {
    return Status::NotFound("RegionFromMaps: nothing is mapped at " + HexAddr(covered) +
                            " inside [" + HexAddr(start) + ", " + HexAddr(end) +
                            "); describe only mapped memory");
  }
  // The page size the kernel maps the range with (hugetlbfs: its huge page
  // size, checked for alignment); one smaps read per call.
  PW_ASSIGN_OR_RETURN(r.page_size, sys::RangePageSize(env, start, end, "RegionFromMaps"));
  return r;
}

}  // namespace pagewise
