// FaultEnv implementation.
#include "testing/fault_env.h"

#include <string>

namespace pagewise::testing {
namespace {
size_t Idx(Op op) { return static_cast<size_t>(op); }
Status Injected(Op op, int err) {
  return ErrnoStatus(err, "injected fault in op " + std::to_string(Idx(op)));
}
}  // namespace

void FaultEnv::Inject(Op op, Fault fault) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_[Idx(op)] = fault;
  armed_[Idx(op)] = true;
}

void FaultEnv::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  armed_.fill(false);
  read_filter_ = nullptr;
}

int FaultEnv::Calls(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_[Idx(op)];
}

int FaultEnv::Fired(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_[Idx(op)];
}

void FaultEnv::SetReadFilter(std::function<void(UffdEvent*, size_t*, size_t)> f) {
  std::lock_guard<std::mutex> lock(mu_);
  read_filter_ = std::move(f);
}

bool FaultEnv::Fire(Op op, Fault* fault) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t i = Idx(op);
  calls_[i]++;
  if (!armed_[i]) return false;
  Fault& rule = rules_[i];
  if (rule.skip > 0) {
    rule.skip--;
    return false;
  }
  if (rule.count == 0) return false;
  if (rule.count > 0) rule.count--;
  fired_[i]++;
  *fault = rule;
  return true;
}

FillResult FaultEnv::Fill(Op op, const std::function<FillResult(uint64_t)>& real, uint64_t len) {
  Fault f;
  if (!Fire(op, &f)) return real(len);
  FillResult r;
  if (f.partial_bytes > 0 && f.partial_bytes < len) {
    FillResult part = real(f.partial_bytes);
    if (!part.ok()) return part;  // the real kernel failed first: report that
    r.bytes = part.bytes;
  }
  r.error = f.error;
  return r;
}

// Operations with no partial-progress semantics: fire or forward.
#define PW_FORWARD(op, call)                        \
  do {                                              \
    Fault f;                                        \
    if (Fire(op, &f)) return Injected(op, f.error); \
    return base_->call;                             \
  } while (0)

Result<int> FaultEnv::UffdCreate(int flags) { PW_FORWARD(Op::kUffdCreate, UffdCreate(flags)); }
Status FaultEnv::UffdApi(int fd, uint64_t features, uint64_t* g, uint64_t* io) {
  PW_FORWARD(Op::kUffdApi, UffdApi(fd, features, g, io));
}
Status FaultEnv::UffdRegister(int fd, uint64_t s, uint64_t l, uint64_t m, uint64_t* io) {
  PW_FORWARD(Op::kUffdRegister, UffdRegister(fd, s, l, m, io));
}
Status FaultEnv::UffdUnregister(int fd, uint64_t s, uint64_t l) {
  PW_FORWARD(Op::kUffdUnregister, UffdUnregister(fd, s, l));
}
Status FaultEnv::UffdWake(int fd, uint64_t s, uint64_t l) {
  PW_FORWARD(Op::kUffdWake, UffdWake(fd, s, l));
}
Status FaultEnv::UffdWriteProtect(int fd, uint64_t s, uint64_t l, uint64_t m) {
  PW_FORWARD(Op::kUffdWriteProtect, UffdWriteProtect(fd, s, l, m));
}

FillResult FaultEnv::UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) {
  return Fill(
      Op::kUffdCopy, [&](uint64_t n) { return base_->UffdCopy(fd, dst, src, n, mode); }, len);
}
FillResult FaultEnv::UffdZeropage(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  return Fill(
      Op::kUffdZeropage, [&](uint64_t n) { return base_->UffdZeropage(fd, start, n, mode); }, len);
}
FillResult FaultEnv::UffdMove(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) {
  return Fill(
      Op::kUffdMove, [&](uint64_t n) { return base_->UffdMove(fd, dst, src, n, mode); }, len);
}
FillResult FaultEnv::UffdContinue(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  return Fill(
      Op::kUffdContinue, [&](uint64_t n) { return base_->UffdContinue(fd, start, n, mode); }, len);
}
FillResult FaultEnv::UffdPoison(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  return Fill(
      Op::kUffdPoison, [&](uint64_t n) { return base_->UffdPoison(fd, start, n, mode); }, len);
}

Result<size_t> FaultEnv::UffdRead(int fd, UffdEvent* events, size_t max) {
  Fault f;
  if (Fire(Op::kUffdRead, &f)) return Injected(Op::kUffdRead, f.error);
  Result<size_t> r = base_->UffdRead(fd, events, max);
  if (!r.ok()) return r;
  std::function<void(UffdEvent*, size_t*, size_t)> filter;
  {
    std::lock_guard<std::mutex> lock(mu_);
    filter = read_filter_;
  }
  size_t n = *r;
  if (filter && n > 0) filter(events, &n, max);
  return n;
}

Result<int> FaultEnv::OpenPagemap(pid_t pid) { PW_FORWARD(Op::kOpenPagemap, OpenPagemap(pid)); }
Result<PagemapScanOut> FaultEnv::PagemapScan(int fd, const PagemapScanArgs& a, PageRegion* v,
                                             size_t n) {
  PW_FORWARD(Op::kPagemapScan, PagemapScan(fd, a, v, n));
}
Result<void*> FaultEnv::Mmap(void* a, size_t l, int p, int fl, int fd, off_t o) {
  PW_FORWARD(Op::kMmap, Mmap(a, l, p, fl, fd, o));
}
Status FaultEnv::Munmap(void* a, size_t l) { PW_FORWARD(Op::kMunmap, Munmap(a, l)); }
Status FaultEnv::Mprotect(void* a, size_t l, int p) {
  PW_FORWARD(Op::kMprotect, Mprotect(a, l, p));
}
Status FaultEnv::Madvise(void* a, size_t l, int adv) {
  PW_FORWARD(Op::kMadvise, Madvise(a, l, adv));
}
Result<void*> FaultEnv::Mremap(void* o, size_t ol, size_t nl, int fl, void* na) {
  PW_FORWARD(Op::kMremap, Mremap(o, ol, nl, fl, na));
}
Result<int> FaultEnv::MemfdCreate(const std::string& n, unsigned fl) {
  PW_FORWARD(Op::kMemfdCreate, MemfdCreate(n, fl));
}
Result<int> FaultEnv::Open(const std::string& p, int fl, mode_t m) {
  PW_FORWARD(Op::kOpen, Open(p, fl, m));
}
Status FaultEnv::Close(int fd) { PW_FORWARD(Op::kClose, Close(fd)); }

Result<size_t> FaultEnv::Pwrite(int fd, const void* buf, size_t len, off_t off) {
  Fault f;
  if (!Fire(Op::kPwrite, &f)) return base_->Pwrite(fd, buf, len, off);
  if (f.partial_bytes > 0 && f.partial_bytes < len) {
    return base_->Pwrite(fd, buf, f.partial_bytes, off);  // a short write
  }
  return Injected(Op::kPwrite, f.error);
}

Result<size_t> FaultEnv::Pread(int fd, void* b, size_t l, off_t o) {
  PW_FORWARD(Op::kPread, Pread(fd, b, l, o));
}
Status FaultEnv::Fsync(int fd) { PW_FORWARD(Op::kFsync, Fsync(fd)); }
Status FaultEnv::Ftruncate(int fd, off_t l) { PW_FORWARD(Op::kFtruncate, Ftruncate(fd, l)); }
Status FaultEnv::Rename(const std::string& a, const std::string& b) {
  PW_FORWARD(Op::kRename, Rename(a, b));
}
Status FaultEnv::Unlink(const std::string& p) { PW_FORWARD(Op::kUnlink, Unlink(p)); }
Status FaultEnv::FsyncParentDir(const std::string& p) {
  PW_FORWARD(Op::kFsyncParentDir, FsyncParentDir(p));
}
Result<uint64_t> FaultEnv::FileSize(int fd) { PW_FORWARD(Op::kFileSize, FileSize(fd)); }
Result<int> FaultEnv::EventfdCreate(unsigned i, int fl) {
  PW_FORWARD(Op::kEventfdCreate, EventfdCreate(i, fl));
}
Result<int> FaultEnv::Poll(void* p, size_t n, int t) { PW_FORWARD(Op::kPoll, Poll(p, n, t)); }
Result<int> FaultEnv::UnixListen(const std::string& p, int b) {
  PW_FORWARD(Op::kUnixListen, UnixListen(p, b));
}
Result<int> FaultEnv::Accept(int fd) { PW_FORWARD(Op::kAccept, Accept(fd)); }
Result<int> FaultEnv::UnixConnect(const std::string& p) {
  PW_FORWARD(Op::kUnixConnect, UnixConnect(p));
}
Result<size_t> FaultEnv::SendWithFd(int s, const void* b, size_t l, int fd) {
  PW_FORWARD(Op::kSendWithFd, SendWithFd(s, b, l, fd));
}
Result<size_t> FaultEnv::RecvWithFd(int s, void* b, size_t l, int* fd) {
  PW_FORWARD(Op::kRecvWithFd, RecvWithFd(s, b, l, fd));
}
Result<pid_t> FaultEnv::PeerPid(int s) { PW_FORWARD(Op::kPeerPid, PeerPid(s)); }
Status FaultEnv::AdjustThreadNice(int n) { PW_FORWARD(Op::kAdjustThreadNice, AdjustThreadNice(n)); }

#undef PW_FORWARD

}  // namespace pagewise::testing
