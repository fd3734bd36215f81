// Maps and smaps parsing: VMA header lines, KernelPageSize and VmFlags.
#include "sys/smaps.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/bytes.h"

namespace pagewise::sys {
namespace {

std::string ProcFile(pid_t pid, const char* name) {
  return pid == 0 ? std::string("/proc/self/") + name : "/proc/" + std::to_string(pid) + "/" + name;
}

// Calls fn(line) for each line of `text` (without its newline) until fn
// returns false.
template <typename Fn>
void ForEachLine(const std::string& text, Fn fn) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!fn(line)) return;
  }
}

}  // namespace

bool MappingInfo::IsShmemPath(const std::string& path) {
  return path.rfind("/memfd:", 0) == 0 || path.rfind("/dev/zero", 0) == 0 ||
         path.rfind("/SYSV", 0) == 0 || path.rfind("/dev/shm/", 0) == 0;
}

int MappingInfo::prot() const {
  return (readable ? PROT_READ : 0) | (writable ? PROT_WRITE : 0) | (executable ? PROT_EXEC : 0);
}

bool ParseMapsLine(const std::string& line, MappingInfo* m) {
  char perms[8] = {};
  unsigned long long start, end, offset, inode;
  unsigned int major, minor;
  int path_at = 0;
  if (sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset, &major,
             &minor, &inode, &path_at) < 7 ||
      std::strlen(perms) < 4) {
    return false;
  }
  m->start = start;
  m->end = end;
  m->readable = perms[0] == 'r';
  m->writable = perms[1] == 'w';
  m->executable = perms[2] == 'x';
  m->shared = perms[3] == 's';
  m->offset = offset;
  m->dev_major = major;
  m->dev_minor = minor;
  m->inode = inode;
  m->path = path_at > 0 && static_cast<size_t>(path_at) <= line.size() ? line.substr(path_at) : "";
  return end > start;
}

Result<std::string> ReadProcText(Env* env, const std::string& path) {
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

Result<std::vector<MappingInfo>> ReadMaps(Env* env, pid_t pid) {
  const std::string path = ProcFile(pid, "maps");
  PW_ASSIGN_OR_RETURN(std::string text, ReadProcText(env, path));
  std::vector<MappingInfo> out;
  Status bad;
  ForEachLine(text, [&](const std::string& line) {
    if (line.empty()) return true;
    MappingInfo m;
    if (!ParseMapsLine(line, &m)) {
      bad = Status::Internal("cannot parse " + path + " line '" + line +
                             "'; please report this kernel's format");
      return false;
    }
    out.push_back(std::move(m));
    return true;
  });
  PW_RETURN_IF_ERROR(bad);
  return out;
}

bool MappingInfo::HasFlag(const char* flag) const {
  for (size_t at = vm_flags.find(flag); at != std::string::npos; at = vm_flags.find(flag, at + 1)) {
    const bool begins = at == 0 || vm_flags[at - 1] == ' ';
    const bool ends = at + 2 == vm_flags.size() || vm_flags[at + 2] == ' ';
    if (begins && ends) return true;
  }
  return false;
}

Result<std::vector<MappingInfo>> ReadMappings(Env* env, pid_t pid, uint64_t start, uint64_t end) {
  PW_ASSIGN_OR_RETURN(std::string text, ReadProcText(env, ProcFile(pid, "smaps")));
  std::vector<MappingInfo> out;
  bool in = false;
  ForEachLine(text, [&](const std::string& line) {
    // Field lines start with a capitalised key; headers with a hex digit.
    const char c = line.empty() ? ' ' : line[0];
    const bool header = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (header) {
      MappingInfo m;
      in = ParseMapsLine(line, &m) && m.end > start && m.start < end;
      if (in) out.push_back(std::move(m));
    } else if (in && line.rfind("KernelPageSize:", 0) == 0) {
      out.back().page_size = std::strtoull(line.c_str() + 15, nullptr, 10) << 10;
    } else if (in && line.rfind("VmFlags:", 0) == 0) {
      size_t f = 8;
      while (f < line.size() && line[f] == ' ') ++f;
      std::string flags = line.substr(f);
      while (!flags.empty() && flags.back() == ' ') flags.pop_back();
      out.back().vm_flags = flags;
    }
    return true;
  });
  return out;
}

Result<uint64_t> RangePageSize(Env* env, uint64_t start, uint64_t end, const char* op) {
  PW_ASSIGN_OR_RETURN(std::vector<MappingInfo> maps, ReadMappings(env, 0, start, end));
  const std::string what = std::string(op) + " [" + HexAddr(start) + ", " + HexAddr(end) + ")";
  uint64_t at = start, page = 0;
  for (const MappingInfo& m : maps) {
    if (m.start > at) break;
    const uint64_t ps = m.page_size ? m.page_size : PageSize();
    if (page != 0 && ps != page) {
      return Status::InvalidArgument(what + ": spans mappings of different page sizes (" +
                                     std::to_string(page) + " and " + std::to_string(ps) +
                                     " bytes at " + HexAddr(m.start) + "); pass each separately");
    }
    page = ps;
    at = m.end;
    if (at >= end) break;
  }
  if (at < end) {
    return Status::InvalidArgument(what + ": not mapped at " + HexAddr(at) +
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
