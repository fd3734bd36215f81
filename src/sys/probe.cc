// Kernel feature probe: asks the kernel, never infers from versions.
#include "pagewise/probe.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <cstring>
#include <string>

#include "sys/pagemap.h"
#include "sys/probe_env.h"
#include "sys/probe_kinds.h"
#include "sys/uapi.h"

namespace pagewise {
namespace {

constexpr const char* kFeatureNames[uffd_feature::kCount] = {"PAGEFAULT_FLAG_WP",
                                                             "EVENT_FORK",
                                                             "EVENT_REMAP",
                                                             "EVENT_REMOVE",
                                                             "MISSING_HUGETLBFS",
                                                             "MISSING_SHMEM",
                                                             "EVENT_UNMAP",
                                                             "SIGBUS",
                                                             "THREAD_ID",
                                                             "MINOR_HUGETLBFS",
                                                             "MINOR_SHMEM",
                                                             "EXACT_ADDRESS",
                                                             "WP_HUGETLBFS_SHMEM",
                                                             "WP_UNPOPULATED",
                                                             "POISON",
                                                             "WP_ASYNC",
                                                             "MOVE"};

// Reads a small sysfs/procfs text file through env; "" on any error.
std::string ReadSmallFile(Env* env, const std::string& path) {
  Result<int> fd = env->Open(path, O_RDONLY);
  if (!fd.ok()) return "";
  char buf[256];
  Result<size_t> n = env->Pread(*fd, buf, sizeof(buf) - 1, 0);
  env->Close(*fd).IgnoreError();  // read-only file; nothing to flush
  if (!n.ok()) return "";
  std::string s(buf, *n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void ProbeUffd(Env* env, KernelFeatures* f) {
  Result<int> fd = env->UffdCreate(O_CLOEXEC | O_NONBLOCK);
  if (!fd.ok()) {
    f->uffd_reason = fd.status().ToString();
    return;
  }
  // Asking for no features makes the kernel report every feature it offers.
  uint64_t features = 0, ioctls = 0;
  Status s = env->UffdApi(*fd, 0, &features, &ioctls);
  env->Close(*fd).IgnoreError();  // throwaway fd
  if (!s.ok()) {
    f->uffd_reason = s.ToString();
    return;
  }
  f->uffd_available = true;
  f->uffd_features = features;
  f->uffd_ioctls = ioctls;
  Result<int> dev = env->Open("/dev/userfaultfd", O_RDWR);
  if (dev.ok()) {
    f->uffd_dev_node = true;
    env->Close(*dev).IgnoreError();
  }
}

void ProbePagemapScan(Env* env, KernelFeatures* f) {
  const size_t page = PageSize();
  Result<void*> mem =
      env->Mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!mem.ok()) {
    f->pagemap_scan_reason = mem.status().ToString();
    return;
  }
  static_cast<volatile char*>(*mem)[0] = 1;
  Result<sys::PagemapScanner> scanner = sys::PagemapScanner::Open(env, 0);
  if (!scanner.ok()) {
    f->pagemap_scan_reason = scanner.status().ToString();
  } else {
    PagemapScanArgs args;
    args.start = reinterpret_cast<uint64_t>(*mem);
    args.end = args.start + page;
    args.category_anyof_mask = sys::page_is::kPresent;
    args.return_mask = sys::page_is::kPresent;
    PageRegion region;
    Result<PagemapScanOut> r = scanner->ScanOnce(args, &region, 1);
    if (!r.ok()) {
      f->pagemap_scan_reason = r.status().ToString();
    } else if (r->regions != 1 || region.start != args.start) {
      f->pagemap_scan_reason = "PAGEMAP_SCAN answered but did not report a present page";
    } else {
      f->pagemap_scan = true;
    }
  }
  env->Munmap(*mem, page).IgnoreError();  // probe scratch page
}

void ProbeSoftDirty(Env* env, KernelFeatures* f) {
  const size_t page = PageSize();
  Result<void*> mem =
      env->Mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!mem.ok()) {
    f->soft_dirty_reason = mem.status().ToString();
    return;
  }
  volatile char* p = static_cast<volatile char*>(*mem);
  p[0] = 1;
  Result<int> clear = env->Open("/proc/self/clear_refs", O_WRONLY);
  Result<int> pm = env->OpenPagemap(0);
  if (!clear.ok() || !pm.ok()) {
    f->soft_dirty_reason = "cannot open /proc/self/clear_refs or pagemap";
  } else {
    Result<size_t> w = env->Pwrite(*clear, "4", 1, 0);
    if (!w.ok()) {
      f->soft_dirty_reason = "clear_refs refused \"4\": " + w.status().ToString();
    } else {
      p[0] = 2;  // must set the soft-dirty bit again
      uint64_t entry = 0;
      off_t off = static_cast<off_t>(reinterpret_cast<uint64_t>(*mem) / page * 8);
      Status r = ReadFully(env, *pm, &entry, sizeof(entry), off);
      if (!r.ok()) {
        f->soft_dirty_reason = r.ToString();
      } else if ((entry >> 55) & 1) {
        f->soft_dirty = true;
      } else {
        f->soft_dirty_reason =
            "clear_refs accepted \"4\" but pagemap bit 55 never set after a write "
            "(kernel built without CONFIG_MEM_SOFT_DIRTY)";
      }
    }
  }
  if (clear.ok()) env->Close(*clear).IgnoreError();
  if (pm.ok()) env->Close(*pm).IgnoreError();
  env->Munmap(*mem, page).IgnoreError();  // probe scratch page
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

std::string UffdFeatureName(uint64_t bit) {
  for (int i = 0; i < uffd_feature::kCount; ++i) {
    if (bit == (1ULL << i)) return kFeatureNames[i];
  }
  for (int i = 0; i < 64; ++i) {
    if (bit == (1ULL << i)) return "BIT" + std::to_string(i);
  }
  return "INVALID";
}

std::vector<std::string> UffdFeatureNames(uint64_t features) {
  std::vector<std::string> out;
  for (int i = 0; i < 64; ++i) {
    if (features & (1ULL << i)) out.push_back(UffdFeatureName(1ULL << i));
  }
  return out;
}

KernelFeatures ProbeKernel(Env* env) {
  KernelFeatures f;
  struct utsname u;
  if (uname(&u) == 0) f.kernel_release = u.release;
  ProbeUffd(env, &f);
  ProbePagemapScan(env, &f);
  ProbeSoftDirty(env, &f);
  std::string thp = ReadSmallFile(env, "/sys/kernel/mm/transparent_hugepage/enabled");
  size_t lb = thp.find('['), rb = thp.find(']');
  f.thp_mode = (lb != std::string::npos && rb > lb) ? thp.substr(lb + 1, rb - lb - 1) : "unknown";
  std::string pmd = ReadSmallFile(env, "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
  f.thp_size = pmd.empty() ? 0 : std::stoull(pmd);
  sys::ProbeMemoryKinds(env, &f);  // sys/probe_kinds.cc
  return f;
}

KernelFeatures ProbeKernel() { return ProbeKernel(Env::Default()); }

const KernelFeatures& Features() {
  static const KernelFeatures* features = new KernelFeatures(ProbeKernel());
  return *features;
}

Status RequireUffd(const KernelFeatures& f, uint64_t bits, std::string_view what) {
  if (!f.uffd_available) {
    return Status::NotSupported(std::string(what) +
                                " needs userfaultfd, which is unavailable: " + f.uffd_reason);
  }
  uint64_t missing = bits & ~f.uffd_features;
  if (missing == 0) return Status::Ok();
  return Status::NotSupported(std::string(what) + " needs userfaultfd features " +
                              JoinNames(UffdFeatureNames(missing)) + " that kernel " +
                              f.kernel_release +
                              " does not offer; upgrade the kernel (WP_ASYNC needs 6.7, MOVE "
                              "6.8) or choose another backend");
}

Status RequirePagemapScan(const KernelFeatures& f, std::string_view what) {
  if (f.pagemap_scan) return Status::Ok();
  return Status::NotSupported(
      std::string(what) + " needs the PAGEMAP_SCAN ioctl (Linux 6.7+): " + f.pagemap_scan_reason);
}

}  // namespace pagewise
