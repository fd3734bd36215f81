// PageServer's accept thread: accepting connections (backing off when the
// process is out of descriptors or memory), checking the peer, and reading
// every handshake in progress at once, each within its deadline, so that
// no connection can hold up another.
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "base/clock.h"
#include "restore/server_impl.h"
#include "sys/wake_eventfd.h"

namespace pagewise::restore {
namespace {

constexpr int kFirstBackoffMs = 10;
constexpr int kMaxBackoffMs = 1000;

int MsUntil(ServeClock::time_point t, ServeClock::time_point now) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, INT32_MAX));
}

}  // namespace

void PageServerImpl::AcceptLoop() {
  std::vector<struct pollfd> fds;
  for (;;) {
    const auto now = ServeClock::now();
    int timeout_ms = -1;
    auto at_most = [&](int ms) { timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms); };
    // While backing off, the listening socket is not polled (it stays
    // readable: polling it would spin).
    const bool accepting = backoff_ms_ == 0 || now >= backoff_until_;
    if (!accepting) at_most(MsUntil(backoff_until_, now));
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({accepting ? listen_.fd : -1, POLLIN, 0});
    for (const Pending& p : pending_) {
      fds.push_back({p.sock, POLLIN, 0});
      at_most(MsUntil(p.deadline, now));
    }
    Result<int> n = env_->Poll(fds.data(), fds.size(), timeout_ms);
    // Drained before stopped_/paused_ are read. Stop() and the handover set
    // them and then signal: a signal drained here is one whose flag the
    // check below sees. Checked first and drained after, a Stop() landing
    // in between (while a finished client's signal woke us) had its signal
    // eaten, and the next poll waited forever (bench restore hung in
    // Stop()'s join).
    const bool woken = n.ok() && (fds[0].revents & POLLIN) != 0;
    if (woken) sys::EventfdDrain(wake_fd_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopped_ || paused_) break;
    }
    if (!n.ok()) break;  // EINVAL/ENOMEM on poll: nothing sensible left to do
    if (woken) Reap();
    // Progress on pending handshakes (back to front: entries may go).
    for (size_t i = pending_.size(); i-- > 0;) {
      Pending& p = pending_[i];
      Status st;
      bool done = false;
      std::string limit;
      if (fds[2 + i].revents != 0) {
        st = ReadSome(&p, &done, &limit);
      } else if (ServeClock::now() >= p.deadline) {
        st = Status::Timeout("not received within " + DurationText(opt_.handshake_timeout) +
                             " (expected one message: the userfaultfd and a JSON body)");
      }
      if (!st.ok()) {
        Refuse(&p, st.WithContext("handshake"), limit);
      } else if (done) {
        Admit(&p);
      } else {
        continue;
      }
      pending_.erase(pending_.begin() + static_cast<ptrdiff_t>(i));
    }
    if (accepting && (fds[1].revents & POLLIN)) {
      if (AcceptOne()) {
        backoff_ms_ = 0;
      } else {
        backoff_ms_ = backoff_ms_ == 0 ? kFirstBackoffMs : std::min(kMaxBackoffMs, backoff_ms_ * 2);
        backoff_until_ = ServeClock::now() + std::chrono::milliseconds(backoff_ms_);
      }
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (paused_) return;  // a handover takes the pending connections
  }
  for (Pending& p : pending_) ClosePending(&p);  // shutting down
  pending_.clear();
}

bool PageServerImpl::AcceptOne() {
  Result<int> sock = env_->Accept(listen_.fd);
  if (!sock.ok()) {
    const int err = sock.status().err();
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
      return true;  // ECONNABORTED, EINTR, a peer that left: nothing to back off from
    }
    uint64_t failures;
    {
      std::lock_guard<std::mutex> lk(mu_);
      failures = ++accept_failures_;
    }
    // Logged when a back-off starts (not at every retry of one episode).
    if (backoff_ms_ == 0) {
      ServeEvent e;
      e.kind = ServeEvent::Kind::kLimit;
      e.connection = next_connection_;
      e.limit = "descriptors";
      e.reason = sock.status().WithContext(
          "accept (failure " + std::to_string(failures) + "; not accepting for " +
          std::to_string(kFirstBackoffMs) + " ms, doubling while it lasts)");
      Emit(e);
    }
    return false;
  }
  Pending p;
  p.connection = next_connection_++;
  p.sock = *sock;
  p.deadline = DeadlineAfter(opt_.handshake_timeout);
  Result<sys::PeerCredentials> peer = sys::GetPeerCredentials(p.sock);
  if (!peer.ok()) {
    Refuse(&p, peer.status().WithContext("reading the peer's credentials"), "");
    return true;
  }
  p.peer = *peer;
  const Status allowed = CheckPeer(p.peer);
  if (!allowed.ok()) {
    Refuse(&p, allowed, "");
    return true;
  }
  if (pending_.size() >= opt_.limits.max_pending) {
    Refuse(&p,
           Status(Code::kResourceExhausted, 0,
                  std::to_string(pending_.size()) + " handshakes already in progress (limit " +
                      std::to_string(opt_.limits.max_pending) + ")"),
           "pending");
    return true;
  }
  pending_.push_back(std::move(p));
  return true;
}

Status PageServerImpl::ReadSome(Pending* p, bool* done, std::string* limit) {
  char buf[16384];
  Result<sys::ReceivedMessage> got = sys::ReceiveMessage(p->sock, buf, sizeof(buf));
  if (!got.ok()) {
    if (got.status().code() == Code::kRetry) return Status::Ok();  // nothing after all
    return got.status().WithContext("reading the handshake");
  }
  // Every descriptor received is ours to close; more than one, or a
  // truncated control message (the kernel dropped descriptors that did not
  // fit), means the handshake cannot be right. It is refused once the body
  // is in, with this reason.
  p->fds.insert(p->fds.end(), got->fds.begin(), got->fds.end());
  if (got->truncated && p->bad_control.empty()) {
    p->bad_control = "the message's control data was truncated (more descriptors than fit)";
  }
  if (got->other_control && p->bad_control.empty()) {
    p->bad_control = "the message carried control data other than SCM_RIGHTS";
  }
  if (got->bytes == 0) {
    return Status::PeerGone("the client closed its connection during the handshake");
  }
  if (p->body.size() + got->bytes > opt_.limits.max_handshake_bytes) {
    *limit = "handshake_bytes";
    return Status::InvalidArgument("handshake body larger than " +
                                   std::to_string(opt_.limits.max_handshake_bytes) +
                                   " bytes (limit handshake_bytes)");
  }
  const std::string_view bytes(buf, got->bytes);
  PW_RETURN_IF_ERROR(p->scanner.Feed(bytes));
  p->body.append(bytes);
  *done = p->scanner.complete();
  return Status::Ok();
}

void PageServerImpl::ClosePending(Pending* p) {
  sys::CloseAll(&p->fds);  // not adopted: drop our copies
  if (p->sock >= 0) env_->Close(p->sock).IgnoreError();
  p->sock = -1;
}

}  // namespace pagewise::restore
