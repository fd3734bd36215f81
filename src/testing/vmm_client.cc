// VmmClient: map, register, connect, send the Firecracker handshake.
#include "testing/vmm_client.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sys/env.h"

namespace pagewise::testing {
namespace {

std::string Errno(const std::string& what) { return what + ": " + strerror(errno); }

int HugeFlag(uint64_t page_size) {
  return page_size == (1ULL << 30) ? (30 << MAP_HUGE_SHIFT) : (21 << MAP_HUGE_SHIFT);
}

}  // namespace

std::string VmmClient::Connect(const std::string& socket, const std::vector<VmmRegion>& regions,
                               const VmmOptions& o) {
  regions_ = regions;
  uint64_t features = UFFD_FEATURE_EVENT_REMOVE;
  if (o.kind == GuestMemKind::kHugetlb) features |= UFFD_FEATURE_MISSING_HUGETLBFS;
  if (o.kind == GuestMemKind::kMemfdShared) features |= UFFD_FEATURE_MISSING_SHMEM;
  Env* env = Env::Default();
  const int flags = O_CLOEXEC | O_NONBLOCK | (o.user_mode_only ? UFFD_USER_MODE_ONLY : 0);
  Result<int> fd = env->UffdCreate(flags);
  if (!fd.ok()) return fd.status().ToString();
  uffd_ = *fd;
  Status api = env->UffdApi(uffd_, features, nullptr, nullptr);
  if (!api.ok()) return api.ToString();
  const uint64_t announced = o.announced_page_size ? o.announced_page_size : o.page_size;
  std::string body = "[";
  for (size_t i = 0; i < regions.size(); ++i) {
    const size_t len = regions[i].size;
    void* p = MAP_FAILED;
    switch (o.kind) {
      case GuestMemKind::kAnon:
        p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
        break;
      case GuestMemKind::kHugetlb:
        p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | HugeFlag(o.page_size), -1, 0);
        break;
      case GuestMemKind::kMemfdShared: {
        const int fd = memfd_create("pagewise-vmm", MFD_CLOEXEC);
        if (fd < 0) return Errno("memfd_create");
        memfds_.push_back(fd);
        if (ftruncate(fd, static_cast<off_t>(len)) != 0) return Errno("ftruncate");
        p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        break;
      }
    }
    if (p == MAP_FAILED) return Errno("mmap of guest memory");
    mem_.push_back(static_cast<char*>(p));
    const uint64_t addr = reinterpret_cast<uint64_t>(p);
    Status reg = env->UffdRegister(uffd_, addr, len, UFFDIO_REGISTER_MODE_MISSING, nullptr);
    if (!reg.ok()) return reg.ToString();
    body += std::string(i ? "," : "") + "{\"base_host_virt_addr\":" + std::to_string(addr) +
            ",\"size\":" + std::to_string(len) +
            ",\"offset\":" + std::to_string(regions[i].offset) +
            (o.legacy_page_size_key ? ",\"page_size_kib\":" : ",\"page_size\":") +
            std::to_string(announced) + "}";
  }
  body += "]";
  Result<int> sock = env->UnixConnect(socket);
  if (!sock.ok()) return sock.status().ToString();
  sock_ = *sock;
  Result<size_t> sent = env->SendWithFd(sock_, body.data(), body.size(), uffd_);
  if (!sent.ok()) return sent.status().ToString();
  if (*sent != body.size()) return "short send of the handshake";
  return "";
}

void VmmClient::CloseUffd() {
  if (uffd_ >= 0) close(uffd_);
  uffd_ = -1;
}

void VmmClient::Close() {
  if (sock_ >= 0) close(sock_);
  CloseUffd();
  for (size_t r = 0; r < mem_.size(); ++r) munmap(mem_[r], regions_[r].size);
  for (int fd : memfds_) close(fd);
  sock_ = -1;
  mem_.clear();
  memfds_.clear();
}

}  // namespace pagewise::testing
