// Env: the one seam between pagewise and the kernel (internal: not public API).
//
// Every system call the library makes (userfaultfd, PAGEMAP_SCAN, memory
// mapping, file I/O for images, sockets) goes through an Env, so that tests
// can inject EAGAIN, EEXIST, short copies, ENOMEM, ENOSPC or reordered events
// while every other call still reaches the real kernel. Env::Default() is the
// real kernel; src/testing/fault_env.h wraps it for fault injection.
//
// Conventions: addresses and lengths are bytes; ranges must be page aligned
// where the kernel requires it (the callee does not re-check). Methods return
// the kernel's answer faithfully: a Status built by ErrnoStatus() or, for the
// userfaultfd fill ioctls, a FillResult holding both progress and errno.
//
// Env is internal: no public header mentions it. Public functions that reach
// the kernel have an internal overload taking an Env* (declared in a
// private header of their subsystem, e.g. track/tracker_env.h) for tests
// and for the library's own layers.
//
// Thread safety: Env methods are safe to call concurrently from any thread
// (the default Env is stateless). Env::Default() is never destroyed.
#ifndef PAGEWISE_SYS_ENV_H_
#define PAGEWISE_SYS_ENV_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "pagewise/region.h"
#include "pagewise/status.h"

namespace pagewise {

// Outcome of UFFDIO_COPY/ZEROPAGE/MOVE/CONTINUE/POISON. `bytes` is how much
// of the range was done before the call stopped (may be > 0 with an error:
// the kernel reports partial progress with EAGAIN). `error` is 0 on full
// success, else the errno: EAGAIN (a non-cooperative event is pending: read
// events, then retry the remainder), EEXIST (a page is already present),
// ESRCH (the target mm is gone), ENOENT, ENOMEM, EINVAL...
struct FillResult {
  uint64_t bytes = 0;
  int error = 0;
  bool ok() const { return error == 0; }
};

// One message read from a userfaultfd, decoded from struct uffd_msg.
struct UffdEvent {
  enum class Kind { kPagefault, kFork, kRemap, kRemove, kUnmap, kUnknown };
  // Bits of `flags` for kPagefault (UFFD_PAGEFAULT_FLAG_*, for code that does
  // not include sys/uapi.h; checked against it in sys/userfaultfd.cc).
  static constexpr uint64_t kFlagWrite = 1 << 0;  // a write fault
  static constexpr uint64_t kFlagWp = 1 << 1;     // on a write-protected page
  static constexpr uint64_t kFlagMinor = 1 << 2;  // a minor fault (page cache hit)
  Kind kind = Kind::kUnknown;
  uint8_t raw_event = 0;
  // kPagefault: UFFD_PAGEFAULT_FLAG_* bits, faulting address, thread id
  // (with UFFD_FEATURE_THREAD_ID).
  uint64_t flags = 0;
  uint64_t address = 0;
  uint32_t ptid = 0;
  // kFork: the child's new userfaultfd, owned by the reader from now on.
  int fork_fd = -1;
  // kRemap: [from, from+len) moved to [to, to+len).
  uint64_t from = 0, to = 0, len = 0;
  // kRemove / kUnmap: [start, end).
  uint64_t start = 0, end = 0;
};

// PAGEMAP_SCAN input (struct pm_scan_arg without the output fields).
struct PagemapScanArgs {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t flags = 0;  // PM_SCAN_WP_MATCHING, PM_SCAN_CHECK_WPASYNC
  uint64_t category_inverted = 0;
  uint64_t category_mask = 0;
  uint64_t category_anyof_mask = 0;
  uint64_t return_mask = 0;
  uint64_t max_pages = 0;  // 0: no limit
};

// One struct page_region: [start, end) with PAGE_IS_* categories.
struct PageRegion {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t categories = 0;
};

struct PagemapScanOut {
  size_t regions = 0;     // entries of vec filled
  uint64_t walk_end = 0;  // where the walk stopped; == args.end when complete
};

class Env {
 public:
  virtual ~Env() = default;

  // The real kernel. Never null, never destroyed.
  static Env* Default();

  // ---- userfaultfd ------------------------------------------------------
  // Creates a userfaultfd with `flags` (O_CLOEXEC, O_NONBLOCK,
  // UFFD_USER_MODE_ONLY): the syscall first, then /dev/userfaultfd with
  // USERFAULTFD_IOC_NEW if the syscall is refused (ENOSYS/EPERM). The caller
  // owns the returned fd.
  virtual Result<int> UffdCreate(int flags) = 0;
  // UFFDIO_API handshake; may be called once per fd. On success *features and
  // *ioctls (either may be null) hold what the kernel granted.
  virtual Status UffdApi(int fd, uint64_t features, uint64_t* granted_features,
                         uint64_t* ioctls) = 0;
  virtual Status UffdRegister(int fd, uint64_t start, uint64_t len, uint64_t mode,
                              uint64_t* ioctls) = 0;
  virtual Status UffdUnregister(int fd, uint64_t start, uint64_t len) = 0;
  virtual Status UffdWake(int fd, uint64_t start, uint64_t len) = 0;
  virtual Status UffdWriteProtect(int fd, uint64_t start, uint64_t len, uint64_t mode) = 0;
  virtual FillResult UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) = 0;
  virtual FillResult UffdZeropage(int fd, uint64_t start, uint64_t len, uint64_t mode) = 0;
  virtual FillResult UffdMove(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) = 0;
  virtual FillResult UffdContinue(int fd, uint64_t start, uint64_t len, uint64_t mode) = 0;
  virtual FillResult UffdPoison(int fd, uint64_t start, uint64_t len, uint64_t mode) = 0;
  // Reads up to `max` messages without blocking (the fd should be
  // O_NONBLOCK). Returns how many were read; 0 when none is pending.
  virtual Result<size_t> UffdRead(int fd, UffdEvent* events, size_t max) = 0;

  // ---- PAGEMAP_SCAN -----------------------------------------------------
  // Opens /proc/<pid>/pagemap (pid 0: self) read-only. Caller owns the fd.
  virtual Result<int> OpenPagemap(pid_t pid) = 0;
  // One PAGEMAP_SCAN ioctl. `vec` has room for `vec_len` regions.
  virtual Result<PagemapScanOut> PagemapScan(int pagemap_fd, const PagemapScanArgs& args,
                                             PageRegion* vec, size_t vec_len) = 0;

  // ---- memory ------------------------------------------------------------
  virtual Result<void*> Mmap(void* addr, size_t len, int prot, int flags, int fd, off_t offset) = 0;
  virtual Status Munmap(void* addr, size_t len) = 0;
  virtual Status Mprotect(void* addr, size_t len, int prot) = 0;
  virtual Status Madvise(void* addr, size_t len, int advice) = 0;
  virtual Result<void*> Mremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                               void* new_addr) = 0;
  // memfd_create(name, flags). Caller owns the fd.
  virtual Result<int> MemfdCreate(const std::string& name, unsigned flags) = 0;

  // ---- files -------------------------------------------------------------
  // open(2). Caller owns the fd.
  virtual Result<int> Open(const std::string& path, int flags, mode_t mode = 0644) = 0;
  virtual Status Close(int fd) = 0;
  // One pwrite(2)/pread(2): may be short; the caller loops (see WriteFully).
  virtual Result<size_t> Pwrite(int fd, const void* buf, size_t len, off_t offset) = 0;
  virtual Result<size_t> Pread(int fd, void* buf, size_t len, off_t offset) = 0;
  virtual Status Fsync(int fd) = 0;
  virtual Status Ftruncate(int fd, off_t len) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Unlink(const std::string& path) = 0;
  // Opens the directory containing `path` and fsyncs it (makes a rename durable).
  virtual Status FsyncParentDir(const std::string& path) = 0;
  // fstat size of an open file.
  virtual Result<uint64_t> FileSize(int fd) = 0;

  // ---- waiting -----------------------------------------------------------
  // eventfd(initval, EFD_CLOEXEC|flags). Caller owns the fd.
  virtual Result<int> EventfdCreate(unsigned initval, int flags) = 0;
  // poll(2) on `fds` (struct pollfd*). Returns the number ready (0 on timeout).
  // EINTR is retried inside.
  virtual Result<int> Poll(void* pollfds, size_t nfds, int timeout_ms) = 0;

  // ---- Unix sockets (the Firecracker UFFD handshake) ----------------------
  // Creates, binds and listens on a SOCK_STREAM Unix socket at `path`,
  // mode 0600 (sys::ListenUnixSocket: only a stale socket there is
  // replaced; anything else is kAlreadyExists). Caller owns the fd.
  virtual Result<int> UnixListen(const std::string& path, int backlog) = 0;
  // accept4(SOCK_CLOEXEC). Caller owns the fd.
  virtual Result<int> Accept(int listen_fd) = 0;
  // Connects a SOCK_STREAM Unix socket to `path`. Caller owns the fd.
  virtual Result<int> UnixConnect(const std::string& path) = 0;
  // sendmsg of `len` bytes with `pass_fd` attached by SCM_RIGHTS (-1: none).
  virtual Result<size_t> SendWithFd(int sock, const void* buf, size_t len, int pass_fd) = 0;
  // recvmsg of up to `len` bytes; a descriptor passed by SCM_RIGHTS lands in
  // *received_fd (else -1), owned by the caller. Returns 0 at end of stream.
  virtual Result<size_t> RecvWithFd(int sock, void* buf, size_t len, int* received_fd) = 0;
  // SO_PEERCRED of a connected Unix socket: the peer's pid.
  virtual Result<pid_t> PeerPid(int sock) = 0;

  // ---- scheduling ---------------------------------------------------------
  // Adds `increment` to the calling thread's nice value only (Linux threads
  // have their own), clamped to [-20, 19]: getpriority + setpriority with
  // the thread id. A positive increment needs no privilege; a negative one
  // needs CAP_SYS_NICE (EACCES/EPERM otherwise).
  virtual Status AdjustThreadNice(int increment) = 0;
};

// Convenience loops over an Env (they keep going on short transfers).
// Writes all of buf at offset; a short write followed by an error (ENOSPC)
// returns that error.
Status WriteFully(Env* env, int fd, const void* buf, size_t len, off_t offset);
// Reads exactly len bytes at offset; EOF before len is kCorruption ("truncated").
Status ReadFully(Env* env, int fd, void* buf, size_t len, off_t offset);

}  // namespace pagewise

#endif  // PAGEWISE_SYS_ENV_H_
