// FaultEnv: an Env that forwards to the real kernel except where a test
// injected a fault.
//
// Faults are armed per operation: skip the first `skip` calls, then fire
// `count` times (-1: forever). A fill fault with `partial_bytes` really
// performs the first partial_bytes of the operation through the base Env and
// then reports the error, exactly like the kernel's partial UFFDIO_COPY with
// EAGAIN. A Pwrite fault with `partial_bytes` performs a short write. A read
// filter can reorder, drop or duplicate the events UffdRead returns.
//
// Thread safety: all methods are safe to call concurrently; fault rules are
// guarded by a mutex (the forwarded calls run outside it).
#ifndef PAGEWISE_TESTING_FAULT_ENV_H_
#define PAGEWISE_TESTING_FAULT_ENV_H_

#include <array>
#include <functional>
#include <mutex>

#include "sys/env.h"

namespace pagewise::testing {

enum class Op {
  kUffdCreate,
  kUffdApi,
  kUffdRegister,
  kUffdUnregister,
  kUffdWake,
  kUffdWriteProtect,
  kUffdCopy,
  kUffdZeropage,
  kUffdMove,
  kUffdContinue,
  kUffdPoison,
  kUffdRead,
  kOpenPagemap,
  kPagemapScan,
  kMmap,
  kMunmap,
  kMprotect,
  kMadvise,
  kMremap,
  kMemfdCreate,
  kOpen,
  kClose,
  kPwrite,
  kPread,
  kFsync,
  kFtruncate,
  kRename,
  kUnlink,
  kFsyncParentDir,
  kFileSize,
  kEventfdCreate,
  kPoll,
  kUnixListen,
  kAccept,
  kUnixConnect,
  kSendWithFd,
  kRecvWithFd,
  kPeerPid,
  kAdjustThreadNice,
  kCount
};

struct Fault {
  int error = 0;               // errno to report
  uint64_t partial_bytes = 0;  // fill ops / Pwrite: bytes really done first
  int skip = 0;                // let this many calls through first
  int count = 1;               // fire this many times; -1: forever
};

class FaultEnv : public Env {
 public:
  explicit FaultEnv(Env* base = Env::Default()) : base_(base) {}

  void Inject(Op op, Fault fault);
  void Clear();
  // Calls seen for `op` (whether or not a fault fired).
  int Calls(Op op) const;
  // Faults fired for `op`.
  int Fired(Op op) const;
  // Called on each successful UffdRead batch; may permute or edit events
  // [0, *n) and change *n (not above `max`).
  void SetReadFilter(std::function<void(UffdEvent* events, size_t* n, size_t max)> f);

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
  Result<PagemapScanOut> PagemapScan(int fd, const PagemapScanArgs& args, PageRegion* vec,
                                     size_t vec_len) override;
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
  // Counts the call; returns true (and the fault) if one fires now.
  bool Fire(Op op, Fault* fault);
  FillResult Fill(Op op, const std::function<FillResult(uint64_t len)>& real, uint64_t len);

  Env* base_;
  mutable std::mutex mu_;
  std::array<Fault, static_cast<size_t>(Op::kCount)> rules_{};
  std::array<bool, static_cast<size_t>(Op::kCount)> armed_{};
  std::array<int, static_cast<size_t>(Op::kCount)> calls_{};
  std::array<int, static_cast<size_t>(Op::kCount)> fired_{};
  std::function<void(UffdEvent*, size_t*, size_t)> read_filter_;
};

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTING_FAULT_ENV_H_
