// PageServer's side of serve handover (restore/server_handover.h): the old
// server exports its listener, pending handshakes, clients (their engines'
// spaces and books) and records; the successor imports them and serves on.
//
// What a successor takes in is treated as it would be at accept: a pending
// handshake's peer is checked again against the successor's allow list and
// its body rescanned, so a handover never admits what a fresh accept would
// refuse. Clients already being served stay served (they were admitted by
// a server of the same user, and dropping one would leave its memory
// unserved); limits apply to what is admitted after the handover.
#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "restore/server_impl.h"
#include "sys/wake_eventfd.h"

namespace pagewise::restore {

Result<ServerExport> PageServerImpl::ExportForHandover() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_ || paused_) return Status::FailedPrecondition("the server is not serving");
    paused_ = true;
  }
  sys::EventfdSignal(wake_fd_);
  if (thread_.joinable()) thread_.join();
  ServerExport out;
  const auto now = ServeClock::now();
  out.quiesce_ns = std::chrono::nanoseconds(now.time_since_epoch()).count();
  out.listen_fd = std::exchange(listen_.fd, -1);
  for (Pending& p : pending_) {
    // What Admit would refuse for its descriptors is refused now: the
    // handover carries one descriptor per pending handshake.
    if (!p.bad_control.empty() || p.fds.size() > 1) {
      Refuse(&p,
             Status::InvalidArgument(p.bad_control.empty()
                                         ? "handshake carried " + std::to_string(p.fds.size()) +
                                               " descriptors; it carries exactly one"
                                         : p.bad_control),
             "");
      continue;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now);
    const int uffd = p.fds.empty() ? -1 : p.fds[0];
    p.fds.clear();
    out.pending.push_back(
        {std::exchange(p.sock, -1), uffd, std::move(p.body), std::max<int64_t>(0, left.count())});
  }
  pending_.clear();
  std::vector<std::shared_ptr<Client>> active;
  {
    std::lock_guard<std::mutex> lk(mu_);
    active.swap(active_);
    for (const auto& c : finished_) out.done.push_back(c->report);
    finished_.clear();
    first_.reset();
    registered_total_ = 0;
    out.next_id = next_id_;
    out.refused = refused_;
    out.first_trace = first_trace_;
  }
  for (const auto& c : active) {
    Result<EngineExport> e = c->engine->Export();
    c->engine->Stop();
    if (!e.ok()) {                         // the client went away meanwhile
      env_->Close(c->sock).IgnoreError();  // gone anyway
      c->report.active = false;
      c->report.status = e.status();
      out.done.push_back(c->report);
      continue;
    }
    HandoverClient h{c->report, c->sock, c->ready_sent.load(), std::move(*e)};
    h.report.stats = h.engine.stats;
    out.active.push_back(std::move(h));
  }
  return out;
}

Status PageServerImpl::ResumeFromExport(ServerExport state) {
  listen_.fd = std::exchange(state.listen_fd, -1);
  Import(std::move(state));
  Begin();
  return Status::Ok();
}

void PageServerImpl::Import(ServerExport state) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    next_id_ = std::max(next_id_, state.next_id);
    refused_ += state.refused;
    first_trace_ = state.first_trace;
    for (ClientReport& r : state.done) {
      auto c = std::make_shared<Client>();
      c->report = std::move(r);
      c->report.active = false;
      finished_.push_back(std::move(c));
    }
    while (finished_.size() > opt_.limits.max_finished_records) finished_.pop_front();
  }
  const auto now = ServeClock::now();
  for (HandoverPending& p : state.pending) ImportPending(std::move(p), now);
  for (HandoverClient& h : state.active) ImportClient(std::move(h));
}

void PageServerImpl::ImportPending(HandoverPending hp, ServeClock::time_point now) {
  Pending p;
  p.connection = next_connection_++;
  p.sock = hp.sock;
  if (hp.uffd >= 0) p.fds.push_back(hp.uffd);
  p.deadline = now + std::chrono::milliseconds(hp.ms_left);
  Result<sys::PeerCredentials> peer = sys::GetPeerCredentials(p.sock);
  if (!peer.ok())
    return Refuse(&p, peer.status().WithContext("reading the peer's credentials"), "");
  p.peer = *peer;
  const Status allowed = CheckPeer(p.peer);
  if (!allowed.ok()) return Refuse(&p, allowed, "");
  if (hp.body.size() > opt_.limits.max_handshake_bytes) {
    return Refuse(&p, Status::InvalidArgument("handshake body over the limit"), "handshake_bytes");
  }
  const Status fed = p.scanner.Feed(hp.body);
  if (!fed.ok()) return Refuse(&p, fed.WithContext("handshake"), "");
  p.body = std::move(hp.body);
  if (p.scanner.complete()) return Admit(&p);  // (no accept thread yet: ours to run)
  pending_.push_back(std::move(p));
}

void PageServerImpl::ImportClient(HandoverClient h) {
  auto c = std::make_shared<Client>();
  c->report = std::move(h.report);
  c->report.active = true;
  c->report.connection = next_connection_++;
  c->sock = h.sock;
  c->ready_sent = h.ready_sent;
  // The credentials the peer connected with (SO_PEERCRED does not change).
  Result<sys::PeerCredentials> peer = sys::GetPeerCredentials(c->sock);
  if (peer.ok()) {
    c->report.uid = peer->uid;
    c->report.gid = peer->gid;
  }
  for (const Region& r : c->report.regions) c->bytes += r.length;
  if (!h.engine.spaces.empty()) {
    c->report.uffd_features = h.engine.spaces[0].features;
    Result<sys::FileIdentity> id = sys::IdentifyFd(h.engine.spaces[0].uffd);
    if (id.ok()) c->uffd_id = *id;
  }
  // A ready byte still owed with no prefetch left to wait for goes now.
  const bool owed =
      opt_.send_ready && !h.ready_sent && (opt_.fill.prefetch.empty() || h.engine.prefetch_done);
  auto engine = std::make_unique<Engine>(source_, EngineOptionsFor(c));
  engine->Adopt(std::move(h.engine));
  {
    std::lock_guard<std::mutex> lk(mu_);
    c->engine = std::move(engine);
    registered_total_ += c->bytes;
    active_.push_back(c);
    if (c->report.id == 0) first_ = c;
  }
  const Status st = c->engine->Start();
  if (!st.ok()) {
    Drop(*c, st.WithContext("continuing a handed-over client"));  // closes its connection
    return;
  }
  if (owed) SendReady(c->sock, c.get());
  ClientReport report;
  {
    std::lock_guard<std::mutex> lk(mu_);
    report = c->report;
  }
  if (opt_.on_client) opt_.on_client(report);
}

}  // namespace pagewise::restore
