// PageServer: lifecycle, reports, dropping clients, events. The accept
// thread is in server_accept.cc, handshake admission in server_admit.cc.
#include <sys/eventfd.h>  // EFD_NONBLOCK
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "base/clock.h"
#include "restore/restore_env.h"
#include "restore/server_impl.h"
#include "sys/files.h"
#include "sys/wake_eventfd.h"

namespace pagewise {
namespace restore {

PageServerImpl::PageServerImpl(std::string path, std::shared_ptr<const PageSource> source,
                               ServeOptions opt, Env* env, sys::ListeningSocket listen, int wake_fd)
    : path_(std::move(path)),
      source_(std::move(source)),
      opt_(std::move(opt)),
      env_(env),
      listen_(listen),
      wake_fd_(wake_fd),
      server_uid_(geteuid()) {
  Result<sys::FileIdentity> anon = sys::IdentifyFd(wake_fd_);
  if (anon.ok()) shared_anon_inode_ = *anon;
}

void PageServerImpl::Begin() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    paused_ = false;
  }
  thread_ = std::thread([this] { AcceptLoop(); });
}

void PageServerImpl::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  sys::EventfdSignal(wake_fd_);
  if (thread_.joinable()) thread_.join();
  std::vector<std::shared_ptr<Client>> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    all = active_;
  }
  for (const auto& c : all) Drop(*c, Status::FailedPrecondition("the server was stopped"));
  // Teardown: failures leave nothing to act on. After a handover the
  // listener and the socket file are the successor's.
  if (listen_.fd >= 0) env_->Close(listen_.fd).IgnoreError();
  env_->Close(wake_fd_).IgnoreError();
  if (!handed_over_) sys::RemoveIfOurs(path_, listen_.file);  // a successor's socket stays
}

std::vector<ClientReport> PageServerImpl::clients() const {
  std::vector<std::shared_ptr<Client>> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    all.assign(finished_.begin(), finished_.end());
    all.insert(all.end(), active_.begin(), active_.end());
  }
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return a->report.id < b->report.id; });
  std::vector<ClientReport> out;
  for (const auto& c : all) {
    std::lock_guard<std::mutex> lk(mu_);
    ClientReport r = c->report;
    if (r.active && c->engine) r.stats = c->engine->Stats();
    out.push_back(std::move(r));
  }
  return out;
}

Status PageServerImpl::WaitClientsDone(size_t count, Duration timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!WaitFor(cv_, lk, timeout, [&] { return dropped_ >= count; })) {
    return Status::Timeout(std::to_string(dropped_) + " of " + std::to_string(count) +
                           " clients done after " + DurationText(timeout));
  }
  return Status::Ok();
}

uint64_t PageServerImpl::refused() const {
  std::lock_guard<std::mutex> lk(mu_);
  return refused_;
}

Status PageServerImpl::last_refusal() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_refusal_;
}

uint64_t PageServerImpl::accept_failures() const {
  std::lock_guard<std::mutex> lk(mu_);
  return accept_failures_;
}

WorkingSetTrace PageServerImpl::trace() const {
  std::lock_guard<std::mutex> lk(mu_);
  if (first_ && first_->engine) return first_->engine->Trace();
  return first_trace_;
}

void PageServerImpl::Reap() {
  std::vector<std::shared_ptr<Client>> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    all = active_;
  }
  for (const auto& c : all) {
    if (c->engine && c->engine->finished()) Drop(*c, c->engine->status());
  }
}

void PageServerImpl::Drop(Client& c, Status why) {
  std::unique_ptr<Engine> engine;
  int sock;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!c.report.active) return;
    engine = std::move(c.engine);
    sock = c.sock;
    c.sock = -1;
  }
  engine->Stop();  // joins its threads; they close its userfaultfds
  const Status engine_status = engine->status();
  RestoreStats stats = engine->Stats();
  WorkingSetTrace trace;
  if (c.report.id == 0) trace = engine->Trace();
  // Destroyed and closed before the drop is counted: WaitClientsDone() may
  // return as soon as dropped_ moves, and then nothing of this client (its
  // socket, the engine's event loop descriptors) may be left open.
  engine.reset();
  env_->Close(sock).IgnoreError();  // the client is gone or being dropped
  ClientReport final_report;
  {
    std::lock_guard<std::mutex> lk(mu_);
    c.report.active = false;
    c.report.stats = std::move(stats);
    c.report.status = engine_status.ok() ? why : engine_status;
    if (c.report.id == 0) first_trace_ = std::move(trace);
    registered_total_ -= std::min(registered_total_, c.bytes);
    final_report = c.report;
    dropped_++;
    auto it = std::find_if(active_.begin(), active_.end(),
                           [&](const std::shared_ptr<Client>& p) { return p.get() == &c; });
    if (it != active_.end()) {
      finished_.push_back(*it);
      active_.erase(it);
    }
    while (finished_.size() > opt_.limits.max_finished_records) finished_.pop_front();
  }
  cv_.notify_all();
  ServeEvent e;
  // The client going away is the normal end; anything else is the server
  // (or the client's misbehaviour) ending it.
  e.kind = final_report.status.code() == Code::kPeerGone ? ServeEvent::Kind::kDone
                                                         : ServeEvent::Kind::kDropped;
  e.connection = final_report.connection;
  e.client = static_cast<int64_t>(final_report.id);
  e.pid = final_report.pid;
  e.uid = final_report.uid;
  e.gid = final_report.gid;
  e.reason = final_report.status;
  Emit(e);
  if (opt_.on_client) opt_.on_client(final_report);
}

ServeEvent PageServerImpl::EventFor(const Pending& p, ServeEvent::Kind kind) const {
  ServeEvent e;
  e.kind = kind;
  e.connection = p.connection;
  e.pid = p.peer.pid;
  // Credentials are known once SO_PEERCRED answered (a peer has a pid).
  e.uid = p.peer.pid > 0 ? static_cast<int64_t>(p.peer.uid) : -1;
  e.gid = p.peer.pid > 0 ? static_cast<int64_t>(p.peer.gid) : -1;
  return e;
}

void PageServerImpl::Refuse(Pending* p, const Status& why, const std::string& limit) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    refused_++;
    last_refusal_ = why;
  }
  ServeEvent e = EventFor(*p, ServeEvent::Kind::kRefused);
  e.limit = limit;
  e.reason = why;
  // Closed before the event: whoever acts on it (a test counting our
  // descriptors, an operator) sees the connection already gone.
  ClosePending(p);  // the client sees end of stream
  Emit(e);
}

void PageServerImpl::Emit(ServeEvent e) const {
  if (opt_.on_event) opt_.on_event(e);
}

// One byte on a fresh stream socket's empty buffer: it does not block.
// A client that is already gone (EPIPE; no SIGPIPE: MSG_NOSIGNAL) is
// noticed by its engine through end of stream, so the error is dropped.
void PageServerImpl::SendReady(int sock, Client* c) {
  const char b = kReadyByte;
  env_->SendWithFd(sock, &b, 1, -1).status().IgnoreError();
  c->ready_sent = true;
}

Status PageServerImpl::CheckPeer(const sys::PeerCredentials& peer) const {
  if (PeerAllowed(opt_.access, server_uid_, peer.uid, peer.gid, peer.groups)) return Status::Ok();
  return Status(Code::kPermissionDenied, 0,
                "uid " + std::to_string(peer.uid) + " gid " + std::to_string(peer.gid) +
                    " is not allowed to connect (serve --allow-uid/--allow-gid)");
}

}  // namespace restore

Result<std::unique_ptr<PageServer>> PageServer::Start(const std::string& socket_path,
                                                      std::shared_ptr<const PageSource> source,
                                                      const ServeOptions& options) {
  return StartPageServer(socket_path, std::move(source), options, Env::Default());
}

namespace {

Result<std::unique_ptr<PageServer>> Launch(const std::string& socket_path,
                                           std::shared_ptr<const PageSource> source,
                                           const ServeOptions& options, Env* env,
                                           sys::ListeningSocket listen,
                                           restore::ServerExport* import) {
  Result<int> wake = env->EventfdCreate(0, EFD_NONBLOCK);
  if (!wake.ok()) {
    env->Close(listen.fd).IgnoreError();  // already failing
    if (import != nullptr) import->CloseAll();
    return wake.status().WithContext("page server");
  }
  auto server = std::make_unique<restore::PageServerImpl>(socket_path, std::move(source), options,
                                                          env, listen, *wake);
  if (import != nullptr) server->Import(std::move(*import));
  server->Begin();
  return std::unique_ptr<PageServer>(std::move(server));
}

}  // namespace

Result<std::unique_ptr<PageServer>> StartPageServer(const std::string& socket_path,
                                                    std::shared_ptr<const PageSource> source,
                                                    const ServeOptions& options, Env* env) {
  PW_RETURN_IF_ERROR(restore::CheckServeOptions(source.get(), options));
  Result<sys::ListeningSocket> listen =
      sys::ListenUnixSocket(socket_path, 64, options.access.socket_mode);
  if (!listen.ok()) return listen.status().WithContext("page server");
  return Launch(socket_path, std::move(source), options, env, *listen, nullptr);
}

Result<std::unique_ptr<PageServer>> restore::StartPageServerOn(
    const std::string& socket_path, std::shared_ptr<const PageSource> source,
    const ServeOptions& options, Env* env, int listen_fd, ServerExport* import) {
  sys::ListeningSocket listen;
  listen.fd = listen_fd;
  // The socket file as it is now (bound by the server we take over from):
  // at exit it is removed only if it is still this one.
  Result<sys::FileIdentity> file = sys::IdentifyPath(socket_path, /*follow_symlinks=*/false);
  if (file.ok()) listen.file = *file;
  return Launch(socket_path, std::move(source), options, env, listen, import);
}

}  // namespace pagewise
