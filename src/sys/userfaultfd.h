// Userfaultfd: an owned userfaultfd with its negotiated features.
//
// Wraps creation (syscall, falling back to /dev/userfaultfd), the UFFDIO_API
// handshake (required features must all be granted; optional ones are asked
// for and kept if granted), and the range ioctls, all through an Env. The
// fill operations (Copy, Zeropage, Move, Continue, Poison) return FillResult
// unaltered so callers see partial progress, EAGAIN and EEXIST exactly as the
// kernel reported them; treating those as control flow is the caller's job.
//
// Thread safety: after Open() returns, every method may be called from any
// thread concurrently (they are independent ioctls on one fd). Move-only;
// the destructor closes the fd, which the kernel treats as "monitor gone":
// registered ranges are unregistered and blocked faulters are woken.
#ifndef PAGEWISE_SYS_USERFAULTFD_H_
#define PAGEWISE_SYS_USERFAULTFD_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::sys {

// Register modes (UFFDIO_REGISTER_MODE_*), for code outside src/sys that
// must not include sys/uapi.h (checked against it in userfaultfd.cc).
inline constexpr uint64_t kRegisterMissing = 1u << 0;
inline constexpr uint64_t kRegisterWp = 1u << 1;
inline constexpr uint64_t kRegisterMinor = 1u << 2;
// Bits of the ioctls mask Register() returns (1 << _UFFDIO_*): the range
// ioctls the kernel allows on the registered range, for the same code.
inline constexpr uint64_t kRangeIoctlWriteProtect = uint64_t{1} << 0x06;  // UFFDIO_WRITEPROTECT
inline constexpr uint64_t kRangeIoctlPoison = uint64_t{1} << 0x08;        // UFFDIO_POISON

// The features (UFFD_FEATURE_*) newer than the 6.1 headers that code
// outside src/sys asks for by name (checked against sys/uapi.h in
// userfaultfd.cc).
inline constexpr uint64_t kFeaturePagefaultFlagWp = 1ull << 0;
inline constexpr uint64_t kFeatureWpUnpopulated = 1ull << 13;  // 6.4
inline constexpr uint64_t kFeatureWpAsync = 1ull << 15;        // 6.7
inline constexpr uint64_t kFeatureMove = 1ull << 16;           // 6.8

class Userfaultfd {
 public:
  struct Options {
    uint64_t required_features = 0;  // all must be granted, else kNotSupported
    uint64_t optional_features = 0;  // granted ones show up in features()
    bool nonblocking = true;         // O_NONBLOCK (events are then read with poll)
    bool user_mode_only = false;     // UFFD_USER_MODE_ONLY
    Env* env = nullptr;              // nullptr: Env::Default()
  };

  // Creates and negotiates. On error nothing is left open.
  static Result<Userfaultfd> Open(const Options& options);
  // The non-cooperative events (EVENT_FORK|REMAP|REMOVE|UNMAP) that a
  // restore's peer (CRIU, a Firecracker-style client) negotiated.
  static uint64_t NonCooperativeEvents();
  // Adopts an fd that already did its UFFDIO_API handshake (e.g. received from
  // a client, or from a UFFD_EVENT_FORK message). `features` is what that
  // handshake granted, if known (0 otherwise). Takes ownership of `fd`.
  static Userfaultfd Adopt(int fd, uint64_t features, Env* env = nullptr);

  Userfaultfd() = default;
  Userfaultfd(Userfaultfd&& other) noexcept;
  Userfaultfd& operator=(Userfaultfd&& other) noexcept;
  Userfaultfd(const Userfaultfd&) = delete;
  Userfaultfd& operator=(const Userfaultfd&) = delete;
  ~Userfaultfd();

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  uint64_t features() const { return features_; }
  bool has(uint64_t bits) const { return (features_ & bits) == bits; }
  Env* env() const { return env_; }
  // Gives up ownership of the fd and returns it.
  int Release();

  // UFFDIO_REGISTER of [start, start+len) with UFFDIO_REGISTER_MODE_* bits.
  // *ioctls (optional) receives the ioctls allowed on the range.
  Status Register(uint64_t start, uint64_t len, uint64_t mode, uint64_t* ioctls = nullptr) const;
  Status Unregister(uint64_t start, uint64_t len) const;
  Status Wake(uint64_t start, uint64_t len) const;
  // Sets (wp=true) or clears write protection; clearing wakes faulters
  // unless dontwake.
  Status WriteProtect(uint64_t start, uint64_t len, bool wp, bool dontwake = false) const;

  FillResult Copy(uint64_t dst, const void* src, uint64_t len, uint64_t mode = 0) const;
  FillResult Zeropage(uint64_t start, uint64_t len, uint64_t mode = 0) const;
  FillResult Move(uint64_t dst, uint64_t src, uint64_t len, uint64_t mode = 0) const;
  FillResult Continue(uint64_t start, uint64_t len, uint64_t mode = 0) const;
  FillResult Poison(uint64_t start, uint64_t len, uint64_t mode = 0) const;

  // Reads pending messages without blocking; returns how many (0: none).
  Result<size_t> ReadEvents(UffdEvent* events, size_t max) const;
  // Waits until the fd is readable or `other_fd` (e.g. a stop eventfd, -1 for
  // none) is; returns true if the uffd is readable. timeout_ms < 0: forever.
  Result<bool> WaitReadable(int other_fd, int timeout_ms) const;

 private:
  Userfaultfd(int fd, uint64_t features, Env* env) : fd_(fd), features_(features), env_(env) {}
  void Reset();

  int fd_ = -1;
  uint64_t features_ = 0;
  Env* env_ = nullptr;
};

// Creates a userfaultfd through /dev/userfaultfd and USERFAULTFD_IOC_NEW
// (Linux 6.1+), the path Env::UffdCreate falls back to when the syscall is
// refused. Caller owns the fd; it still needs its UFFDIO_API handshake.
Result<int> CreateUserfaultfdViaDevice(int flags);

// Turns a failed FillResult into a Status naming the operation and range.
Status FillStatus(const FillResult& r, std::string_view op, uint64_t start, uint64_t len);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_USERFAULTFD_H_
