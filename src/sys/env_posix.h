// PosixEnv: the real-kernel Env (Env::Default()), declared here so that its
// methods can live in two files by subject: env_posix_uffd.cc (userfaultfd
// and PAGEMAP_SCAN: the uapi structs and ioctls) and env_posix.cc (memory,
// files, waiting, sockets, scheduling).
//
// Each method is a thin, faithful wrapper: it passes arguments through,
// retries only EINTR, and reports the kernel's answer unaltered (partial
// progress and errno for the userfaultfd fill ioctls). The contracts are
// Env's (env.h).
//
// Private to src/sys: everything else reaches the kernel through Env*.
// Thread safety: stateless; every method is safe from any thread.
#ifndef PAGEWISE_SYS_ENV_POSIX_H_
#define PAGEWISE_SYS_ENV_POSIX_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::sys {

class PosixEnv final : public Env {
 public:
  // ---- userfaultfd and PAGEMAP_SCAN (env_posix_uffd.cc) ----
  Result<int> UffdCreate(int flags) override;
  Status UffdApi(int fd, uint64_t features, uint64_t* granted, uint64_t* ioctls) override;
  Status UffdRegister(int fd, uint64_t start, uint64_t len, uint64_t mode,
                      uint64_t* ioctls) override;
  Status UffdUnregister(int fd, uint64_t start, uint64_t len) override;
  Status UffdWake(int fd, uint64_t start, uint64_t len) override;
  Status UffdWriteProtect(int fd, uint64_t start, uint64_t len, uint64_t mode) override;
  FillResult UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) override;
  FillResult UffdZeropage(int fd, uint64_t start, uint64_t len, uint64_t mode) override;
  FillResult UffdMove(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) override;
  FillResult UffdContinue(int fd, uint64_t start, uint64_t len, uint64_t mode) override;
  FillResult UffdPoison(int fd, uint64_t start, uint64_t len, uint64_t mode) override;
  Result<size_t> UffdRead(int fd, UffdEvent* events, size_t max) override;
  Result<int> OpenPagemap(pid_t pid) override;
  Result<PagemapScanOut> PagemapScan(int fd, const PagemapScanArgs& a, PageRegion* vec,
                                     size_t vec_len) override;

  // ---- memory, files, waiting, sockets, scheduling (env_posix.cc) ----
  Result<void*> Mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) override;
  Status Munmap(void* addr, size_t len) override;
  Status Mprotect(void* addr, size_t len, int prot) override;
  Status Madvise(void* addr, size_t len, int advice) override;
  Result<void*> Mremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                       void* new_addr) override;
  Result<int> MemfdCreate(const std::string& name, unsigned flags) override;
  Result<int> Open(const std::string& path, int flags, mode_t mode) override;
  Status Close(int fd) override;
  Result<size_t> Pwrite(int fd, const void* buf, size_t len, off_t off) override;
  Result<size_t> Pread(int fd, void* buf, size_t len, off_t off) override;
  Status Fsync(int fd) override;
  Status Ftruncate(int fd, off_t len) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Unlink(const std::string& path) override;
  Status FsyncParentDir(const std::string& path) override;
  Result<uint64_t> FileSize(int fd) override;
  Result<int> EventfdCreate(unsigned initval, int flags) override;
  Result<int> Poll(void* pollfds, size_t nfds, int timeout_ms) override;
  Result<int> UnixListen(const std::string& path, int backlog) override;
  Result<int> Accept(int listen_fd) override;
  Result<int> UnixConnect(const std::string& path) override;
  Result<size_t> SendWithFd(int sock, const void* buf, size_t len, int pass_fd) override;
  Result<size_t> RecvWithFd(int sock, void* buf, size_t len, int* received_fd) override;
  Result<pid_t> PeerPid(int sock) override;
  Status AdjustThreadNice(int increment) override;

 private:
  // "0x1f" and "op [0x1000, +4096)", for messages.
  static std::string Hex(uint64_t v);
  static std::string RangeText(const char* op, uint64_t start, uint64_t len);
};

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_ENV_POSIX_H_
