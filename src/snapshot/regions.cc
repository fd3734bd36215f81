// Describing regions of this process: MakeRegion and /proc/self/maps.
#include <fcntl.h>
#include <sys/mman.h>

#include <cinttypes>
#include <cstdio>
#include <string>

#include "pagewise/snapshot.h"
#include "snapshot/internal.h"
#include "snapshot/snapshot_env.h"
#include "sys/smaps.h"

namespace pagewise {

using snapshot_internal::Hex;

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

Result<std::string> ReadWholeProcFile(Env* env, const std::string& path) {
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_CLOEXEC));
  std::string text;
  Status status;
  char buf[16384];
  for (;;) {
    // procfs files report size 0: read until EOF.
    Result<size_t> n = env->Pread(fd, buf, sizeof(buf), static_cast<off_t>(text.size()));
    if (!n.ok()) {
      status = n.status().WithContext("reading " + path);
      break;
    }
    if (*n == 0) break;
    text.append(buf, *n);
  }
  env->Close(fd).IgnoreError();  // read-only procfs fd: nothing to flush
  if (!status.ok()) return status;
  return text;
}

bool ParseMapsLine(const std::string& line, MappingInfo* m) {
  unsigned long long start = 0, end = 0, offset = 0, inode = 0;
  char perms[8] = {0};
  unsigned dev_major = 0, dev_minor = 0;
  int path_pos = 0;
  int n = std::sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms,
                      &offset, &dev_major, &dev_minor, &inode, &path_pos);
  if (n < 7 || std::string(perms).size() < 4) return false;
  m->start = start;
  m->end = end;
  m->offset = offset;
  m->inode = inode;
  m->prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
            (perms[2] == 'x' ? PROT_EXEC : 0);
  m->shared = perms[3] == 's';
  m->path = path_pos > 0 && static_cast<size_t>(path_pos) <= line.size() ? line.substr(path_pos)
                                                                         : std::string();
  return true;
}

RegionKind KindOf(const MappingInfo& m) {
  const bool named_file = !m.path.empty() && m.path[0] == '/';
  if (m.shared) {
    if (!named_file || m.path.rfind("/memfd:", 0) == 0 || m.path.rfind("/dev/zero", 0) == 0 ||
        m.path.rfind("/SYSV", 0) == 0 || m.path.rfind("/dev/shm/", 0) == 0) {
      return RegionKind::kShared;
    }
    return RegionKind::kFile;
  }
  return named_file ? RegionKind::kFile : RegionKind::kAnonymous;
}

}  // namespace

Result<std::vector<MappingInfo>> ReadSelfMaps() { return ReadSelfMaps(Env::Default()); }

Result<std::vector<MappingInfo>> ReadSelfMaps(Env* env) {
  PW_ASSIGN_OR_RETURN(std::string text, ReadWholeProcFile(env, "/proc/self/maps"));
  std::vector<MappingInfo> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    MappingInfo m;
    if (!ParseMapsLine(line, &m)) {
      return Status::Internal("cannot parse /proc/self/maps line '" + line +
                              "'; please report this kernel's format");
    }
    out.push_back(std::move(m));
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
    return Status::InvalidArgument("RegionFromMaps: [" + Hex(start) + ", +" + std::to_string(len) +
                                   ") must be non-empty and page aligned");
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
    return Status::NotFound("RegionFromMaps: nothing is mapped at " + Hex(covered) + " inside [" +
                            Hex(start) + ", " + Hex(end) + "); describe only mapped memory");
  }
  // The page size the kernel maps the range with (hugetlbfs: its huge page
  // size, checked for alignment); one smaps read per call.
  PW_ASSIGN_OR_RETURN(r.page_size, sys::RangePageSize(env, start, end, "RegionFromMaps"));
  return r;
}

}  // namespace pagewise
