// LazyClient: the client side of the UFFD handshake, with a watchdog that
// turns the page server's death into SIGBUS (or an abort), never zeros.
//
// Why this works: the client keeps its own reference to the userfaultfd, so
// the kernel keeps the ranges registered when the server dies (without it,
// they would be unregistered and every unserved page would read as zero).
// The server never writes to the socket, so end of stream means it is gone
// (or dropped us). The watchdog then becomes the userfaultfd's reader: it
// poisons every page that is still missing ("sealing", so that the marks
// outlive even this object: a poisoned pte raises SIGBUS whether or not the
// range is still registered), and poisons whatever faults afterwards.
#include <poll.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "base/clock.h"
#include "pagewise/probe.h"
#include "pagewise/serve.h"
#include "restore/restore_env.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"

namespace pagewise {
namespace {

class LazyClientImpl final : public LazyClient {
 public:
  LazyClientImpl(Env* env, sys::Userfaultfd uffd, int sock, std::unique_ptr<sys::UffdLoop> loop,
                 std::vector<Region> regions, LazyClientOptions opt, bool can_poison, bool ready)
      : env_(env),
        uffd_(std::move(uffd)),
        sock_(sock),
        loop_(std::move(loop)),
        regions_(std::move(regions)),
        opt_(std::move(opt)),
        can_poison_(can_poison),
        ready_(ready) {
    watchdog_ = std::thread([this] { Watch(); });
  }

  ~LazyClientImpl() override {
    if (status().ok()) Populate().IgnoreError();  // best effort: see serve.h
    loop_->Stop();
    watchdog_.join();
    env_->Close(sock_).IgnoreError();  // teardown: nothing to act on if this fails
  }

  Status status() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return status_;
  }

  Status WaitServerLost(Duration timeout) override {
    std::unique_lock<std::mutex> lk(mu_);
    auto lost = [&] { return loss_handled_; };
    if (!WaitFor(cv_, lk, timeout, lost)) {
      return Status::Timeout("the page server is still connected after " + DurationText(timeout));
    }
    return Status::Ok();
  }

  Status Populate() override {
    for (const Region& r : regions_) {
      Status s = env_->Madvise(reinterpret_cast<void*>(r.address), r.length, MADV_POPULATE_READ);
      if (!s.ok()) {
        Status lost = status();
        return lost.ok() ? s.WithContext("populating guest memory") : lost;
      }
    }
    return status();
  }

  uint64_t poisoned_pages() const override { return poisoned_.load(); }
  bool ready() const override { return ready_; }

 private:
  // Phase 1 (the server is there): the loop watches the socket. The server
  // writes at most kReadyByte (ignored here), so readable with no bytes
  // means end of stream: it is gone.
  struct SocketWatch final : sys::UffdHandler {
    LazyClientImpl* self;
    bool gone = false;
    explicit SocketWatch(LazyClientImpl* c) : self(c) {}
    void OnWatched(int fd, short) override {
      char buf[64];
      int passed = -1;
      Result<size_t> got = self->env_->RecvWithFd(fd, buf, sizeof(buf), &passed);
      if (passed >= 0) self->env_->Close(passed).IgnoreError();  // not part of the protocol
      if (got.ok() && *got > 0) return;                          // unexpected bytes: ignore
      gone = true;
    }
    bool BeforePoll(Duration*) override { return !gone; }
  };

  // Phase 2 (we are the userfaultfd's reader): source 0 is our userfaultfd,
  // source k the k-th child forked after the loss.
  struct Poisoner final : sys::UffdHandler {
    LazyClientImpl* self;
    explicit Poisoner(LazyClientImpl* c) : self(c) {}
    void OnPagefault(uint64_t tag, const UffdEvent& e) override {
      self->PoisonFault(self->Source(tag), e.address);
    }
    bool OnFork(uint64_t, const UffdEvent& e) override {
      self->AdoptChild(e.fork_fd);
      return true;
    }
    // REMOVE/REMAP/UNMAP: reading them let the program go on; nothing to do.
    bool BeforePoll(Duration* timeout) override {
      // Faults that met EAGAIN (an event was pending) are retried once the
      // events are read; poll briefly meanwhile.
      self->retry_.clear();
      self->retry_.swap(self->pending_);
      for (uint64_t page : self->retry_) self->PoisonFault(self->uffd_, page);
      if (!self->pending_.empty()) *timeout = std::chrono::milliseconds(1);
      return true;
    }
  };

  void Watch() {
    SocketWatch watch(this);
    if (!loop_->Watch(sock_).ok() || !loop_->Run(&watch).ok() || !watch.gone) return;
    loop_->Unwatch(sock_);
    const Status lost = Status::PeerGone(
        "the page server went away (its socket reached end of stream); pages it had not "
        "served yet are poisoned and raise SIGBUS when touched");
    {
      std::lock_guard<std::mutex> lk(mu_);
      status_ = lost;
    }
    if (opt_.on_server_lost) opt_.on_server_lost(lost);
    if (opt_.on_loss == ServerLossPolicy::kAbort || !can_poison_) {
      std::fprintf(stderr,
                   "pagewise: the page server went away; aborting so that no page of guest "
                   "memory can read as zero%s\n",
                   can_poison_ ? "" : " (UFFDIO_POISON is not available)");
      std::abort();
    }
    for (const Region& r : regions_) Seal(0, r.address, r.length);
    {
      std::lock_guard<std::mutex> lk(mu_);
      loss_handled_ = true;
    }
    cv_.notify_all();
    // Children are registered as they are adopted: reserve room for some
    // now, so that the loop rarely grows later.
    if (!loop_->Reserve(16).ok() || !loop_->AddUffd(uffd_.fd(), 0).ok()) return;
    Poisoner poisoner(this);
    while (!loop_->stopping()) {
      if (!loop_->Run(&poisoner).ok()) return;  // poll failed: nobody left to serve
    }
  }

  const sys::Userfaultfd& Source(uint64_t tag) const {
    return tag == 0 ? uffd_ : children_[tag - 1];
  }

  // Poisons every missing page of [start, start+len) of source `tag`.
  void Seal(uint64_t tag, uint64_t start, uint64_t len) {
    const sys::Userfaultfd& uffd = Source(tag);
    const uint64_t ps = PageSize();
    uint64_t a = start;
    const uint64_t end = start + len;
    while (a < end) {
      const FillResult r = uffd.Poison(a, end - a);
      poisoned_ += r.bytes / ps;
      a += r.bytes;
      if (r.ok()) continue;
      switch (r.error) {
        case EEXIST:  // present: served before the loss, keep it
        case ENOENT:  // not mapped (any more): nothing to protect
          a += ps;
          break;
        case EAGAIN:  // partial progress, or an event is pending: read it
          if (r.bytes == 0) DrainOnce(tag);
          break;
        default:  // ESRCH (we are exiting) or worse: stop
          return;
      }
    }
  }

  // Reads (and handles) what is pending on source `tag` while sealing it.
  void DrainOnce(uint64_t tag) {
    Poisoner poisoner(this);
    UffdEvent events[32];
    // A failed read leaves the messages queued: the loop reads them later.
    sys::DrainUffd(env_, Source(tag).fd(), tag, &poisoner, events, 32, 1).status().IgnoreError();
  }

  void PoisonFault(const sys::Userfaultfd& uffd, uint64_t address) {
    const uint64_t ps = PageSize();
    const uint64_t page = address & ~(ps - 1);
    const FillResult r = uffd.Poison(page, ps);
    if (r.ok()) {
      poisoned_++;
    } else if (r.error == EEXIST || r.error == ENOENT) {
      uffd.Wake(page, ps).IgnoreError();  // resolved or unmapped: let it retry
    } else if (r.error == EAGAIN) {       // an event is pending: retry after reading it
      pending_.push_back(page);
    }
  }

  // A child forked after the loss: it has no server either.
  void AdoptChild(int fd) {
    children_.push_back(sys::Userfaultfd::Adopt(fd, uffd_.features(), env_));
    const uint64_t tag = children_.size();
    for (const Region& r : regions_) Seal(tag, r.address, r.length);
    // (Only the loop thread calls this. A failure to grow leaves the child
    // sealed but unserved: its faults on sealed pages raise SIGBUS anyway.)
    loop_->AddUffd(children_.back().fd(), tag).IgnoreError();
  }

  Env* env_;
  sys::Userfaultfd uffd_;
  int sock_;
  std::unique_ptr<sys::UffdLoop> loop_;  // the watchdog's
  const std::vector<Region> regions_;
  const LazyClientOptions opt_;
  const bool can_poison_;
  const bool ready_;  // Connect() saw kReadyByte
  std::thread watchdog_;
  std::deque<sys::Userfaultfd> children_;  // watchdog thread only (stable addresses)
  std::vector<uint64_t> pending_;          // watchdog thread only
  std::vector<uint64_t> retry_;            // watchdog thread only
  std::atomic<uint64_t> poisoned_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status status_;              // guarded by mu_
  bool loss_handled_ = false;  // guarded by mu_: callback run, pages sealed
};

// Waits up to `timeout` for kReadyByte on `sock` (before the watchdog
// exists, so nothing else reads it). *ready: it came. End of stream: the
// server dropped us right after the handshake (refused it, or died).
Status WaitReady(Env* env, int sock, Duration timeout, bool* ready) {
  const auto deadline = DeadlineAfter(timeout);
  for (;;) {
    const Duration left = deadline - std::chrono::steady_clock::now();
    if (left <= Duration::zero()) return Status::Ok();  // not ready: pages come on demand
    struct pollfd pfd = {sock, POLLIN, 0};
    PW_ASSIGN_OR_RETURN(int n, env->Poll(&pfd, 1, PollTimeoutMs(left)));
    if (n == 0 || pfd.revents == 0) continue;  // timed out (checked above) or spurious
    char buf[16];
    int fd = -1;
    PW_ASSIGN_OR_RETURN(size_t got, env->RecvWithFd(sock, buf, sizeof(buf), &fd));
    if (fd >= 0) env->Close(fd).IgnoreError();  // not part of the protocol
    if (got == 0) {
      return Status::PeerGone(
          "the page server closed the connection right after the handshake: it refused it "
          "(its log or PageServer::last_refusal() says why) or it died");
    }
    if (std::memchr(buf, kReadyByte, got) != nullptr) {
      *ready = true;
      return Status::Ok();
    }
    // Other bytes are not part of the protocol: ignore them, as the watchdog does.
  }
}

}  // namespace

Result<std::unique_ptr<LazyClient>> LazyClient::Connect(const std::string& socket_path,
                                                        const std::vector<Region>& regions,
                                                        const LazyClientOptions& options) {
  return ConnectLazyClient(socket_path, regions, options, Env::Default());
}

Result<std::unique_ptr<LazyClient>> ConnectLazyClient(const std::string& socket_path,
                                                      const std::vector<Region>& regions,
                                                      const LazyClientOptions& options, Env* env) {
  if (regions.empty()) return Status::InvalidArgument("lazy client: no regions");
  sys::Userfaultfd::Options uo;
  uo.required_features = uffd_feature::kEventRemove;
  uo.optional_features = uffd_feature::kEventFork | uffd_feature::kEventRemap |
                         uffd_feature::kEventUnmap | uffd_feature::kPoison;
  uo.env = env;
  PW_ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(uo));
  bool can_poison = true;
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    uint64_t ioctls = 0;
    Status s = uffd.Register(r.address, r.length, sys::kRegisterMissing, &ioctls);
    if (!s.ok()) {
      return s.WithContext("lazy client: registering region " + std::to_string(i) +
                           " (guest memory must be private anonymous, page aligned)");
    }
    can_poison = can_poison && (ioctls & sys::kRangeIoctlPoison) != 0;
  }
  PW_ASSIGN_OR_RETURN(int sock, env->UnixConnect(socket_path));
  const std::string body = HandshakeJson(regions);
  Result<size_t> sent = env->SendWithFd(sock, body.data(), body.size(), uffd.fd());
  size_t off = sent.ok() ? *sent : 0;
  while (sent.ok() && off < body.size()) {
    sent = env->SendWithFd(sock, body.data() + off, body.size() - off, -1);
    if (sent.ok()) off += *sent;
  }
  if (!sent.ok()) {
    env->Close(sock).IgnoreError();  // already failing
    return sent.status().WithContext("lazy client: sending the handshake to " + socket_path);
  }
  bool ready = false;
  if (options.wait_ready > Duration::zero()) {
    Status w = WaitReady(env, sock, options.wait_ready, &ready);
    if (!w.ok()) {
      env->Close(sock).IgnoreError();  // already failing
      return w.WithContext("lazy client: waiting for the page server at " + socket_path);
    }
  }
  Result<std::unique_ptr<sys::UffdLoop>> loop = sys::UffdLoop::Create(env);
  if (!loop.ok()) {
    env->Close(sock).IgnoreError();  // already failing
    return loop.status().WithContext("lazy client: creating the watchdog's event loop");
  }
  return std::unique_ptr<LazyClient>(std::make_unique<LazyClientImpl>(
      env, std::move(uffd), sock, std::move(loop).value(), regions, options, can_poison, ready));
}

}  // namespace pagewise
