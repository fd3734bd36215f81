// Memory-kind probe: registers scratch hugetlbfs, shmem and anonymous
// mappings with a throwaway userfaultfd in each mode and records what the
// kernel allows; reads the hugetlbfs pools.
#include "sys/probe_kinds.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sys/uapi.h"
#include "sys/userfaultfd.h"

namespace pagewise {
namespace {

constexpr const char* kHugepagesDir = "/sys/kernel/mm/hugepages";

// Reads a small procfs/sysfs file through env ("" on any error).
std::string ReadText(Env* env, const std::string& path, size_t max = 8192) {
  Result<int> fd = env->Open(path, O_RDONLY);
  if (!fd.ok()) return "";
  std::string buf(max, '\0');
  Result<size_t> n = env->Pread(*fd, buf.data(), max - 1, 0);
  env->Close(*fd).IgnoreError();  // read-only file: nothing to flush
  if (!n.ok()) return "";
  buf.resize(*n);
  while (!buf.empty() && (buf.back() == '\n' || buf.back() == ' ')) buf.pop_back();
  return buf;
}

uint64_t ReadCount(Env* env, const std::string& path) {
  const std::string s = ReadText(env, path, 64);
  return s.empty() ? 0 : std::strtoull(s.c_str(), nullptr, 10);
}

// "always [madvise] never" -> "madvise".
std::string Bracketed(const std::string& s) {
  const size_t lb = s.find('['), rb = s.find(']');
  return (lb != std::string::npos && rb != std::string::npos && rb > lb)
             ? s.substr(lb + 1, rb - lb - 1)
             : "unknown";
}

HugePagePoolInfo ReadPool(Env* env, uint64_t page_size) {
  const std::string dir =
      std::string(kHugepagesDir) + "/hugepages-" + std::to_string(page_size >> 10) + "kB/";
  HugePagePoolInfo p;
  p.page_size = page_size;
  p.total = ReadCount(env, dir + "nr_hugepages");
  p.free = ReadCount(env, dir + "free_hugepages");
  p.reserved = ReadCount(env, dir + "resv_hugepages");
  p.surplus = ReadCount(env, dir + "surplus_hugepages");
  return p;
}

// Page sizes of the pools under /sys/kernel/mm/hugepages, smallest first.
std::vector<uint64_t> PoolSizes() {
  std::vector<uint64_t> sizes;
  DIR* d = opendir(kHugepagesDir);
  if (d == nullptr) return sizes;
  while (const struct dirent* e = readdir(d)) {
    unsigned long long kb = 0;
    if (std::sscanf(e->d_name, "hugepages-%llukB", &kb) == 1 && kb > 0) sizes.push_back(kb << 10);
  }
  closedir(d);
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

uint64_t DefaultHugePageSize(Env* env) {
  const std::string meminfo = ReadText(env, "/proc/meminfo", 16384);
  const size_t at = meminfo.find("Hugepagesize:");
  if (at == std::string::npos) return 0;
  return std::strtoull(meminfo.c_str() + at + std::strlen("Hugepagesize:"), nullptr, 10) << 10;
}

// A scratch mapping of one kind; unmapped (and its memfd closed) on scope exit.
class Scratch {
 public:
  Scratch(Env* env, bool hugetlb, bool shared, size_t len) : env_(env), len_(len) {
    int flags = MAP_NORESERVE;  // a hugetlbfs probe must work with an empty pool
    int fd = -1;
    if (shared) {
      Result<int> memfd =
          env->MemfdCreate("pagewise-probe", MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0));
      if (!memfd.ok()) {
        error_ = memfd.status().ToString();
        return;
      }
      memfd_ = *memfd;
      Status t = env->Ftruncate(memfd_, static_cast<off_t>(len));
      if (!t.ok()) {
        error_ = t.ToString();
        return;
      }
      fd = memfd_;
      flags |= MAP_SHARED;
    } else {
      flags |= MAP_PRIVATE | MAP_ANONYMOUS | (hugetlb ? MAP_HUGETLB : 0);
    }
    Result<void*> m = env->Mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (!m.ok()) {
      error_ = m.status().ToString();
      return;
    }
    addr_ = reinterpret_cast<uint64_t>(*m);
  }
  ~Scratch() {
    if (addr_ != 0) env_->Munmap(reinterpret_cast<void*>(addr_), len_).IgnoreError();  // scratch
    if (memfd_ >= 0) env_->Close(memfd_).IgnoreError();                                // scratch
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  uint64_t addr() const { return addr_; }
  size_t len() const { return len_; }
  const std::string& error() const { return error_; }

 private:
  Env* env_;
  size_t len_;
  uint64_t addr_ = 0;
  int memfd_ = -1;
  std::string error_;
};

struct Attempt {
  uint64_t feature = 0;    // UFFD_FEATURE_* the capability needs
  bool hugetlb = false;    // hugetlbfs memory (else shmem / anonymous)
  bool shared = false;     // memfd MAP_SHARED (else private anonymous)
  uint64_t mode = 0;       // UFFDIO_REGISTER_MODE_*
  uint64_t ioctl_bit = 0;  // the range ioctl the mode must allow
  const char* ioctl_name = "";
};

std::string TryRegister(Env* env, const KernelFeatures& f, const Attempt& a, uint64_t huge_size) {
  if (!f.uffd_available) return "userfaultfd is unavailable: " + f.uffd_reason;
  if ((f.uffd_features & a.feature) != a.feature) {
    return "the kernel does not offer UFFD_FEATURE_" + UffdFeatureName(a.feature);
  }
  if (a.hugetlb && huge_size == 0) {
    return "this kernel has no hugetlbfs (no Hugepagesize in /proc/meminfo)";
  }
  sys::Userfaultfd::Options o;
  o.required_features = a.feature;
  o.env = env;
  Result<sys::Userfaultfd> uffd = sys::Userfaultfd::Open(o);
  if (!uffd.ok()) return uffd.status().ToString();
  Scratch mem(env, a.hugetlb, a.shared, a.hugetlb ? huge_size : PageSize());
  if (!mem.error().empty()) return "cannot map scratch memory: " + mem.error();
  uint64_t ioctls = 0;
  Status s = uffd->Register(mem.addr(), mem.len(), a.mode, &ioctls);
  if (!s.ok()) return "registering it was refused: " + s.ToString();
  uffd->Unregister(mem.addr(), mem.len()).IgnoreError();  // throwaway fd, closed next
  if ((ioctls & a.ioctl_bit) == 0) {
    return std::string("registered, but the kernel does not allow ") + a.ioctl_name + " on it";
  }
  return "";
}

}  // namespace

namespace sys {

void ProbeMemoryKinds(Env* env, KernelFeatures* f) {
  f->thp_shmem_mode =
      Bracketed(ReadText(env, "/sys/kernel/mm/transparent_hugepage/shmem_enabled", 256));
  f->default_huge_page_size = DefaultHugePageSize(env);
  for (uint64_t size : PoolSizes()) f->huge_page_pools.push_back(ReadPool(env, size));

  using namespace uffd_feature;
  const uint64_t copy = 1ULL << _UFFDIO_COPY, cont = 1ULL << _UFFDIO_CONTINUE,
                 wp = 1ULL << _UFFDIO_WRITEPROTECT, move = 1ULL << _UFFDIO_MOVE;
  struct Entry {
    MemoryCapability c;
    const char* memory;
    Attempt attempt;
  };
  const Entry entries[kMemoryCapabilityCount] = {
      {MemoryCapability::kMissingHugetlbfs,
       "hugetlbfs (MAP_HUGETLB, memfd MFD_HUGETLB)",
       {kMissingHugetlbfs, true, false, UFFDIO_REGISTER_MODE_MISSING, copy, "UFFDIO_COPY"}},
      {MemoryCapability::kMissingShmem,
       "shmem (memfd, MAP_SHARED anonymous, /dev/shm)",
       {kMissingShmem, false, true, UFFDIO_REGISTER_MODE_MISSING, copy, "UFFDIO_COPY"}},
      {MemoryCapability::kMinorHugetlbfs,
       "hugetlbfs shared (memfd MFD_HUGETLB, MAP_SHARED)",
       {kMinorHugetlbfs, true, true, UFFDIO_REGISTER_MODE_MINOR, cont, "UFFDIO_CONTINUE"}},
      {MemoryCapability::kMinorShmem,
       "shmem (memfd MAP_SHARED or MAP_PRIVATE)",
       {kMinorShmem, false, true, UFFDIO_REGISTER_MODE_MINOR, cont, "UFFDIO_CONTINUE"}},
      {MemoryCapability::kWpHugetlbfsShmem,
       "hugetlbfs and shmem",
       {kWpHugetlbfsShmem, false, true, UFFDIO_REGISTER_MODE_WP, wp, "UFFDIO_WRITEPROTECT"}},
      {MemoryCapability::kMove,
       "private anonymous (whole THPs when PMD-mapped)",
       {kMove, false, false, UFFDIO_REGISTER_MODE_MISSING, move, "UFFDIO_MOVE"}},
  };
  f->memory_kinds.clear();
  for (const Entry& e : entries) {
    MemoryKindSupport k;
    k.capability = e.c;
    k.memory = e.memory;
    k.reason = TryRegister(env, *f, e.attempt, f->default_huge_page_size);
    // Write-protect must work on hugetlbfs too, not only on shmem.
    if (k.reason.empty() && e.c == MemoryCapability::kWpHugetlbfsShmem) {
      Attempt huge = e.attempt;
      huge.hugetlb = true;
      huge.shared = false;
      const std::string r = TryRegister(env, *f, huge, f->default_huge_page_size);
      if (!r.empty()) k.reason = "shmem works, hugetlbfs does not: " + r;
    }
    k.supported = k.reason.empty();
    f->memory_kinds.push_back(std::move(k));
  }
}

}  // namespace sys

std::string_view MemoryCapabilityName(MemoryCapability c) {
  switch (c) {
    case MemoryCapability::kMissingHugetlbfs:
      return "MISSING_HUGETLBFS";
    case MemoryCapability::kMissingShmem:
      return "MISSING_SHMEM";
    case MemoryCapability::kMinorHugetlbfs:
      return "MINOR_HUGETLBFS";
    case MemoryCapability::kMinorShmem:
      return "MINOR_SHMEM";
    case MemoryCapability::kWpHugetlbfsShmem:
      return "WP_HUGETLBFS_SHMEM";
    case MemoryCapability::kMove:
      return "MOVE";
  }
  return "UNKNOWN";
}

const MemoryKindSupport& KernelFeatures::kind(MemoryCapability c) const {
  static const MemoryKindSupport* unprobed = [] {
    auto* k = new MemoryKindSupport();
    k->reason = "not probed (KernelFeatures not filled by ProbeKernel)";
    return k;
  }();
  for (const MemoryKindSupport& k : memory_kinds) {
    if (k.capability == c) return k;
  }
  return *unprobed;
}

bool KernelFeatures::Supports(MemoryCapability c) const { return kind(c).supported; }

Status RequireMemoryKind(const KernelFeatures& f, MemoryCapability c, std::string_view what) {
  const MemoryKindSupport& k = f.kind(c);
  if (k.supported) return Status::Ok();
  return Status::NotSupported(std::string(what) + " needs userfaultfd " +
                              std::string(MemoryCapabilityName(c)) + " (" + k.memory +
                              "), which kernel " + f.kernel_release +
                              " does not support: " + k.reason + "; see `pagewise probe`");
}

Result<HugePagePoolInfo> ReadHugePagePool(uint64_t page_size) {
  for (uint64_t size : PoolSizes()) {
    if (size == page_size) return ReadPool(Env::Default(), size);
  }
  std::string offered;
  for (uint64_t size : PoolSizes()) offered += (offered.empty() ? "" : ", ") + std::to_string(size);
  return Status::NotFound("no hugetlbfs pool of " + std::to_string(page_size) +
                          "-byte pages on this kernel (pools: " +
                          (offered.empty() ? std::string("none") : offered) + ")");
}

Status RequireHugePages(uint64_t page_size, uint64_t pages, std::string_view what) {
  PW_ASSIGN_OR_RETURN(HugePagePoolInfo pool, ReadHugePagePool(page_size));
  if (pool.available() >= pages) return Status::Ok();
  const std::string file = page_size == Features().default_huge_page_size
                               ? std::string("/proc/sys/vm/nr_hugepages")
                               : std::string(kHugepagesDir) + "/hugepages-" +
                                     std::to_string(page_size >> 10) + "kB/nr_hugepages";
  return Status(Code::kResourceExhausted, 0,
                std::string(what) + " needs " + std::to_string(pages) + " huge pages of " +
                    std::to_string(page_size >> 10) + " KiB, but the pool has " +
                    std::to_string(pool.available()) + " available (" + std::to_string(pool.free) +
                    " free, " + std::to_string(pool.reserved) + " reserved, " +
                    std::to_string(pool.total) + " in all): add pages to it as root, e.g. echo " +
                    std::to_string(pool.total + pages - pool.available()) + " > " + file);
}

}  // namespace pagewise
