// Smaps parsing: headers, KernelPageSize and VmFlags of the asked VMAs.
#include "sys/smaps.h"

#include <fcntl.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pagewise::sys {
namespace {

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
  return buf;
}

// Parses a VMA header line ("start-end perms offset maj:min inode path").
bool ParseHeader(const std::string& line, MappingInfo* m) {
  char perms[8] = {};
  unsigned long long start, end, offset, inode;
  unsigned int major, minor;
  int path_at = 0;
  if (sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset, &major,
             &minor, &inode, &path_at) < 7) {
    return false;
  }
  m->start = start;
  m->end = end;
  m->readable = perms[0] == 'r';
  m->writable = perms[1] == 'w';
  m->shared = perms[3] == 's';
  m->offset = offset;
  m->dev_major = major;
  m->dev_minor = minor;
  m->inode = inode;
  m->path = path_at > 0 && static_cast<size_t>(path_at) <= line.size() ? line.substr(path_at) : "";
  return end > start;
}

Result<std::string> ReadAll(Env* env, const std::string& path) {
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_CLOEXEC));
  std::string text;
  std::string buf(1 << 16, '\0');
  Status status;
  for (;;) {
    Result<size_t> n = env->Pread(fd, buf.data(), buf.size(), static_cast<off_t>(text.size()));
    if (!n.ok()) {
      status = n.status().WithContext("reading " + path);
      break;
    }
    if (*n == 0) break;
    text.append(buf.data(), *n);
  }
  env->Close(fd).IgnoreError();  // read-only procfs file: nothing to flush
  PW_RETURN_IF_ERROR(status);
  return text;
}

}  // namespace

bool MappingInfo::HasFlag(const char* flag) const {
  for (size_t at = vm_flags.find(flag); at != std::string::npos; at = vm_flags.find(flag, at + 1)) {
    const bool begins = at == 0 || vm_flags[at - 1] == ' ';
    const bool ends = at + 2 == vm_flags.size() || vm_flags[at + 2] == ' ';
    if (begins && ends) return true;
  }
  return false;
}

Result<std::vector<MappingInfo>> ReadMappings(Env* env, pid_t pid, uint64_t start, uint64_t end) {
  const std::string path =
      pid == 0 ? std::string("/proc/self/smaps") : "/proc/" + std::to_string(pid) + "/smaps";
  PW_ASSIGN_OR_RETURN(std::string text, ReadAll(env, path));
  std::vector<MappingInfo> out;
  bool in = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    // Field lines start with a capitalised key; headers with a hex digit.
    const char c = line.empty() ? ' ' : line[0];
    const bool header = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (header) {
      MappingInfo m;
      in = ParseHeader(line, &m) && m.end > start && m.start < end;
      if (in) out.push_back(std::move(m));
      continue;
    }
    if (!in) continue;
    if (line.rfind("KernelPageSize:", 0) == 0) {
      out.back().page_size = std::strtoull(line.c_str() + 15, nullptr, 10) << 10;
    } else if (line.rfind("VmFlags:", 0) == 0) {
      size_t f = 8;
      while (f < line.size() && line[f] == ' ') ++f;
      std::string flags = line.substr(f);
      while (!flags.empty() && flags.back() == ' ') flags.pop_back();
      out.back().vm_flags = flags;
    }
  }
  return out;
}

Result<uint64_t> RangePageSize(Env* env, uint64_t start, uint64_t end, const char* op) {
  PW_ASSIGN_OR_RETURN(std::vector<MappingInfo> maps, ReadMappings(env, 0, start, end));
  const std::string what = std::string(op) + " [" + Hex(start) + ", " + Hex(end) + ")";
  uint64_t at = start, page = 0;
  for (const MappingInfo& m : maps) {
    if (m.start > at) break;
    const uint64_t ps = m.page_size ? m.page_size : PageSize();
    if (page != 0 && ps != page) {
      return Status::InvalidArgument(what + ": spans mappings of different page sizes (" +
                                     std::to_string(page) + " and " + std::to_string(ps) +
                                     " bytes at " + Hex(m.start) + "); pass each separately");
    }
    page = ps;
    at = m.end;
    if (at >= end) break;
  }
  if (at < end) {
    return Status::InvalidArgument(what + ": not mapped at " + Hex(at) +
                                   "; pass only mapped memory");
  }
  if (start % page != 0 || end % page != 0) {
    return Status::InvalidArgument(
        what + ": hugetlbfs memory with huge page size " + std::to_string(page) +
        " must be used in whole huge pages: the address and length must be multiples of " +
        std::to_string(page) + " (round the range out to huge page boundaries)");
  }
  return page;
}

}  // namespace pagewise::sys
