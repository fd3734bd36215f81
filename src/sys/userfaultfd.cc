// Userfaultfd implementation: creation, negotiation, and range operations.
#include "sys/userfaultfd.h"

#include <fcntl.h>
#include <poll.h>

#include <string>

#include "pagewise/probe.h"
#include "sys/uapi.h"

namespace pagewise::sys {

static_assert(kRegisterMissing == UFFDIO_REGISTER_MODE_MISSING);
static_assert(kRegisterWp == UFFDIO_REGISTER_MODE_WP);
static_assert(kRegisterMinor == UFFDIO_REGISTER_MODE_MINOR);
static_assert(kRangeIoctlWriteProtect == uint64_t{1} << _UFFDIO_WRITEPROTECT);
static_assert(kRangeIoctlPoison == uint64_t{1} << _UFFDIO_POISON);
static_assert(UffdEvent::kFlagWrite == UFFD_PAGEFAULT_FLAG_WRITE);
static_assert(UffdEvent::kFlagWp == UFFD_PAGEFAULT_FLAG_WP);
static_assert(UffdEvent::kFlagMinor == UFFD_PAGEFAULT_FLAG_MINOR);
static_assert(kFeaturePagefaultFlagWp == UFFD_FEATURE_PAGEFAULT_FLAG_WP);
static_assert(kFeatureWpUnpopulated == UFFD_FEATURE_WP_UNPOPULATED);
static_assert(kFeatureWpAsync == UFFD_FEATURE_WP_ASYNC);
static_assert(kFeatureMove == UFFD_FEATURE_MOVE);

Result<Userfaultfd> Userfaultfd::Open(const Options& options) {
  Env* env = options.env ? options.env : Env::Default();
  int flags = O_CLOEXEC;
  if (options.nonblocking) flags |= O_NONBLOCK;
  if (options.user_mode_only) flags |= UFFD_USER_MODE_ONLY;
  PW_ASSIGN_OR_RETURN(int fd, env->UffdCreate(flags));
  Userfaultfd uffd(fd, 0, env);

  // UFFDIO_API refuses unknown bits with EINVAL and can be called only once
  // per fd, so ask a throwaway fd what the kernel offers when optional
  // features are wanted, then request exactly required | (optional ∩ offered).
  uint64_t request = options.required_features;
  if (options.optional_features != 0) {
    const KernelFeatures& kf = Features();
    request |= options.optional_features & kf.uffd_features;
  }
  uint64_t granted = 0;
  Status s = env->UffdApi(fd, request, &granted, nullptr);
  if (!s.ok()) {
    if (s.code() == Code::kInvalidArgument) {
      std::string missing;
      for (const std::string& n : UffdFeatureNames(request & ~Features().uffd_features)) {
        missing += (missing.empty() ? "" : ", ") + n;
      }
      return Status::NotSupported("userfaultfd: the kernel refused features " +
                                  (missing.empty() ? std::string("(unknown)") : missing) +
                                  "; upgrade the kernel or pick a backend that does not need them "
                                  "(see `pagewise probe`)");
    }
    return s.WithContext("userfaultfd handshake");
  }
  if ((granted & options.required_features) != options.required_features) {
    std::string missing;
    for (const std::string& n : UffdFeatureNames(options.required_features & ~granted)) {
      missing += (missing.empty() ? "" : ", ") + n;
    }
    return Status::NotSupported("userfaultfd: the kernel did not grant " + missing +
                                "; see `pagewise probe` for what it offers");
  }
  uffd.features_ = granted;
  return uffd;
}

uint64_t Userfaultfd::NonCooperativeEvents() {
  return UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
         UFFD_FEATURE_EVENT_UNMAP;
}

Userfaultfd Userfaultfd::Adopt(int fd, uint64_t features, Env* env) {
  return Userfaultfd(fd, features, env ? env : Env::Default());
}

Userfaultfd::Userfaultfd(Userfaultfd&& other) noexcept
    : fd_(other.fd_), features_(other.features_), env_(other.env_) {
  other.fd_ = -1;
}

Userfaultfd& Userfaultfd::operator=(Userfaultfd&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = other.fd_;
    features_ = other.features_;
    env_ = other.env_;
    other.fd_ = -1;
  }
  return *this;
}

Userfaultfd::~Userfaultfd() { Reset(); }

void Userfaultfd::Reset() {
  if (fd_ >= 0) {
    // Nothing useful can be done if close fails; the fd is gone either way.
    env_->Close(fd_).IgnoreError();
    fd_ = -1;
  }
}

int Userfaultfd::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

Status Userfaultfd::Register(uint64_t start, uint64_t len, uint64_t mode, uint64_t* ioctls) const {
  return env_->UffdRegister(fd_, start, len, mode, ioctls);
}

Status Userfaultfd::Unregister(uint64_t start, uint64_t len) const {
  return env_->UffdUnregister(fd_, start, len);
}

Status Userfaultfd::Wake(uint64_t start, uint64_t len) const {
  return env_->UffdWake(fd_, start, len);
}

Status Userfaultfd::WriteProtect(uint64_t start, uint64_t len, bool wp, bool dontwake) const {
  uint64_t mode = 0;
  if (wp) mode |= UFFDIO_WRITEPROTECT_MODE_WP;
  if (dontwake) mode |= UFFDIO_WRITEPROTECT_MODE_DONTWAKE;
  return env_->UffdWriteProtect(fd_, start, len, mode);
}

FillResult Userfaultfd::Copy(uint64_t dst, const void* src, uint64_t len, uint64_t mode) const {
  return env_->UffdCopy(fd_, dst, reinterpret_cast<uint64_t>(src), len, mode);
}

FillResult Userfaultfd::Zeropage(uint64_t start, uint64_t len, uint64_t mode) const {
  return env_->UffdZeropage(fd_, start, len, mode);
}

FillResult Userfaultfd::Move(uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) const {
  return env_->UffdMove(fd_, dst, src, len, mode);
}

FillResult Userfaultfd::Continue(uint64_t start, uint64_t len, uint64_t mode) const {
  return env_->UffdContinue(fd_, start, len, mode);
}

FillResult Userfaultfd::Poison(uint64_t start, uint64_t len, uint64_t mode) const {
  return env_->UffdPoison(fd_, start, len, mode);
}

Result<size_t> Userfaultfd::ReadEvents(UffdEvent* events, size_t max) const {
  return env_->UffdRead(fd_, events, max);
}

Result<bool> Userfaultfd::WaitReadable(int other_fd, int timeout_ms) const {
  struct pollfd fds[2] = {{fd_, POLLIN, 0}, {other_fd, POLLIN, 0}};
  PW_ASSIGN_OR_RETURN(int n, env_->Poll(fds, other_fd >= 0 ? 2 : 1, timeout_ms));
  if (n == 0) return false;
  if (fds[0].revents & (POLLERR | POLLNVAL)) {
    return Status::IoError("userfaultfd poll reported an error (fd closed or invalid)");
  }
  return (fds[0].revents & POLLIN) != 0;
}

Status FillStatus(const FillResult& r, std::string_view op, uint64_t start, uint64_t len) {
  if (r.ok()) return Status::Ok();
  char buf[96];
  snprintf(buf, sizeof(buf), " [0x%llx, +%llu) after %llu bytes",
           static_cast<unsigned long long>(start), static_cast<unsigned long long>(len),
           static_cast<unsigned long long>(r.bytes));
  return ErrnoStatus(r.error, std::string(op) + buf);
}

}  // namespace pagewise::sys
