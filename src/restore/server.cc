// PageServer: accepts Firecracker-style handshakes and runs one restore
// engine per client.
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>

#include "base/clock.h"
#include "pagewise/serve.h"
#include "restore/engine.h"
#include "restore/restore_env.h"
#include "restore/server_handover.h"
#include "sys/userfaultfd.h"

namespace pagewise {
namespace {

constexpr size_t kMaxHandshakeBytes = 1 << 20;

struct Pending {  // a connection whose handshake is not complete yet
  int sock = -1;
  int uffd = -1;
  std::string body;
  std::chrono::steady_clock::time_point deadline;
};

struct Client {
  ClientReport report;  // guarded by the server's mu_ (stats refreshed on read)
  int sock = -1;
  std::unique_ptr<restore::Engine> engine;
  std::atomic<bool> ready_sent{false};
};

class PageServerImpl final : public PageServer, public restore::HandoverPort {
 public:
  PageServerImpl(std::string path, std::shared_ptr<const PageSource> source, ServeOptions opt,
                 Env* env, int listen_fd, int wake_fd)
      : path_(std::move(path)),
        source_(std::move(source)),
        opt_(std::move(opt)),
        env_(env),
        listen_fd_(listen_fd),
        wake_fd_(wake_fd) {}

  // Starts accepting (after a handover import, once the clients are in).
  void Begin() {
    paused_ = false;
    thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~PageServerImpl() override { Stop(); }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    eventfd_write(wake_fd_, 1);
    if (thread_.joinable()) thread_.join();
    std::vector<std::shared_ptr<Client>> all;
    {
      std::lock_guard<std::mutex> lk(mu_);
      all = clients_;
    }
    for (const auto& c : all) Drop(*c, Status::FailedPrecondition("the server was stopped"));
    // Teardown: failures leave nothing to act on. After a handover the
    // socket (file and listener) belongs to the successor.
    if (listen_fd_ >= 0) env_->Close(listen_fd_).IgnoreError();
    env_->Close(wake_fd_).IgnoreError();
    if (!handed_over_) env_->Unlink(path_).IgnoreError();
  }

  // ---- serve handover (restore/server_handover.h; server_handover.cc) ----
  Result<restore::ServerExport> ExportForHandover() override;
  Status ResumeFromExport(restore::ServerExport state) override {
    listen_fd_ = std::exchange(state.listen_fd, -1);
    Import(std::move(state));
    Begin();
    return Status::Ok();
  }
  void HandedOver() override { handed_over_ = true; }
  // Takes in a handed-over state (before Begin()).
  void Import(restore::ServerExport state);

  const std::string& socket_path() const override { return path_; }

  std::vector<ClientReport> clients() const override {
    std::vector<std::shared_ptr<Client>> all;
    {
      std::lock_guard<std::mutex> lk(mu_);
      all = clients_;
    }
    std::vector<ClientReport> out;
    for (const auto& c : all) {
      std::lock_guard<std::mutex> lk(mu_);
      ClientReport r = c->report;
      if (r.active && c->engine) r.stats = c->engine->Stats();
      out.push_back(std::move(r));
    }
    return out;
  }

  Status WaitClientsDone(size_t count, Duration timeout) override {
    std::unique_lock<std::mutex> lk(mu_);
    auto done = [&] { return dropped_ >= count; };
    if (!WaitFor(cv_, lk, timeout, done)) {
      return Status::Timeout(std::to_string(dropped_) + " of " + std::to_string(count) +
                             " clients done after " + DurationText(timeout));
    }
    return Status::Ok();
  }

  uint64_t refused() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return refused_;
  }
  Status last_refusal() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return last_refusal_;
  }

  WorkingSetTrace trace() const override {
    std::lock_guard<std::mutex> lk(mu_);
    if (!clients_.empty() && clients_[0]->engine) return clients_[0]->engine->Trace();
    return first_trace_;
  }

 private:
  // Handshakes are read from all connections at once (none can hold up
  // another), each within handshake_timeout.
  void AcceptLoop() {
    std::vector<struct pollfd> fds;
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      int timeout_ms = -1;
      fds.clear();
      fds.push_back({listen_fd_, POLLIN, 0});
      fds.push_back({wake_fd_, POLLIN, 0});
      for (const Pending& p : pending_) {
        fds.push_back({p.sock, POLLIN, 0});
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now).count();
        const int ms = static_cast<int>(std::max<int64_t>(0, left));
        timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
      }
      Result<int> n = env_->Poll(fds.data(), fds.size(), timeout_ms);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopped_ || paused_) break;
      }
      if (!n.ok()) break;
      if (fds[1].revents & POLLIN) {
        eventfd_t v;
        eventfd_read(wake_fd_, &v);
        Reap();
      }
      // Progress on pending handshakes (back to front: entries may go).
      for (size_t i = pending_.size(); i-- > 0;) {
        Pending& p = pending_[i];
        Status st;
        bool done = false;
        if (fds[2 + i].revents != 0) {
          st = ReadSome(&p, &done);
        } else if (std::chrono::steady_clock::now() >= p.deadline) {
          st = Status::Timeout("not received within " + DurationText(opt_.handshake_timeout) +
                               " (expected one message: the userfaultfd and a JSON body)");
        }
        if (!st.ok()) {
          Refuse(p.sock, p.uffd, st.WithContext("handshake"));
        } else if (done) {
          Admit(p.sock, p.uffd, p.body);
        } else {
          continue;
        }
        pending_.erase(pending_.begin() + static_cast<ptrdiff_t>(i));
      }
      if (fds[0].revents & POLLIN) {
        Result<int> sock = env_->Accept(listen_fd_);
        if (sock.ok()) {
          pending_.push_back({*sock, -1, std::string(), DeadlineAfter(opt_.handshake_timeout)});
        }
      }
    }
    if (paused_) return;  // a handover takes the pending connections
    for (const Pending& p : pending_) {
      if (p.uffd >= 0) env_->Close(p.uffd).IgnoreError();  // shutting down
      env_->Close(p.sock).IgnoreError();
    }
    pending_.clear();
  }

  // Drops clients whose engine stopped by itself (client gone).
  void Reap() {
    std::vector<std::shared_ptr<Client>> all;
    {
      std::lock_guard<std::mutex> lk(mu_);
      all = clients_;
    }
    for (const auto& c : all) {
      if (c->engine && c->engine->finished()) Drop(*c, c->engine->status());
    }
  }

  void Drop(Client& c, Status why) {
    std::unique_ptr<restore::Engine> engine;
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
    ClientReport final_report;
    {
      std::lock_guard<std::mutex> lk(mu_);
      c.report.active = false;
      c.report.stats = engine->Stats();
      c.report.status = engine_status.ok() ? why : engine_status;
      if (c.report.id == 0) first_trace_ = engine->Trace();
      final_report = c.report;
      dropped_++;
    }
    env_->Close(sock).IgnoreError();  // the client is gone or being dropped
    cv_.notify_all();
    if (opt_.on_client) opt_.on_client(final_report);
  }

  void Refuse(int sock, int fd, const Status& why) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      refused_++;
      last_refusal_ = why;
    }
    if (fd >= 0) env_->Close(fd).IgnoreError();  // refusing: drop our copy
    env_->Close(sock).IgnoreError();             // the client sees end of stream
  }

  // One read of a pending handshake (its socket is readable): the message
  // carries the descriptor and a JSON body, possibly split over several
  // reads by the stream socket. *done once the body is one JSON document
  // (whether it is a valid handshake is ParseHandshake's business).
  Status ReadSome(Pending* p, bool* done) {
    char buf[16384];
    int fd = -1;
    PW_ASSIGN_OR_RETURN(size_t got, env_->RecvWithFd(p->sock, buf, sizeof(buf), &fd));
    if (fd >= 0) {
      if (p->uffd < 0) {
        p->uffd = fd;
      } else {
        env_->Close(fd).IgnoreError();  // only one descriptor belongs to the handshake
      }
    }
    if (got == 0) return Status::PeerGone("the client closed its connection during the handshake");
    p->body.append(buf, got);
    *done = nlohmann::json::accept(p->body);
    if (!*done && p->body.size() > kMaxHandshakeBytes) {
      return Status::InvalidArgument("handshake body larger than 1 MiB");
    }
    return Status::Ok();
  }

  void Admit(int sock, int uffd, const std::string& body) {
    if (uffd < 0) {
      return Refuse(sock, uffd,
                    Status::InvalidArgument("handshake carried no descriptor (send the "
                                            "userfaultfd with SCM_RIGHTS)"));
    }
    Result<std::vector<Region>> regions = ParseHandshake(body);
    if (!regions.ok()) return Refuse(sock, uffd, regions.status());
    std::vector<restore::SpaceRegion> space;
    const uint64_t ps = PageSize();
    for (size_t i = 0; i < regions->size(); ++i) {
      const Region& g = (*regions)[i];
      const std::string where = "handshake region " + std::to_string(i);
      if (g.page_size != ps) {
        return Refuse(sock, uffd,
                      Status::NotSupported(where + ": page size " + std::to_string(g.page_size) +
                                           " (hugetlbfs-backed guest memory) is not supported; "
                                           "back guest memory with 4 KiB pages"));
      }
      if (g.length == 0 || g.length % ps || g.offset % ps || g.address % ps) {
        return Refuse(sock, uffd, Status::InvalidArgument(where + ": not page aligned"));
      }
      if (g.offset > source_->size() || g.length > source_->size() - g.offset) {
        return Refuse(sock, uffd,
                      Status::InvalidArgument(where + " lies beyond the memory file (" +
                                              source_->Describe() + ")"));
      }
      space.push_back({g.address, g.length, g.offset});
    }
    Result<pid_t> pid = env_->PeerPid(sock);

    auto client = std::make_shared<Client>();
    client->sock = sock;
    client->report.pid = pid.ok() ? *pid : 0;
    client->report.regions = *regions;
    client->report.active = true;
    {
      std::lock_guard<std::mutex> lk(mu_);
      client->report.id = next_id_++;
    }
    client->engine = std::make_unique<restore::Engine>(source_, EngineOptionsFor(client.get()));
    client->engine->AddSpace(sys::Userfaultfd::Adopt(uffd, 0, env_), space);
    const Status st = Launch(client, opt_.send_ready && opt_.fill.prefetch.empty());
    if (!st.ok()) return Refuse(sock, -1, st.WithContext("starting the client's server"));
  }

  // Starts a client's engine (its spaces added or adopted) and lists the
  // client; on failure the engine is gone (its userfaultfds closed).
  Status Launch(const std::shared_ptr<Client>& client, bool send_ready_now) {
    const Status st = client->engine->Start();
    if (!st.ok()) {
      client->engine.reset();
      return st;
    }
    if (send_ready_now) SendReady(client.get());
    ClientReport report;
    {
      std::lock_guard<std::mutex> lk(mu_);
      clients_.push_back(client);
      report = client->report;
    }
    if (opt_.on_client) opt_.on_client(report);
    return Status::Ok();
  }

  restore::EngineOptions EngineOptionsFor(Client* client) {
    restore::EngineOptions eo;
    eo.env = env_;
    eo.fill = opt_.fill;
    eo.watch_fd = client->sock;
    // The client did UFFDIO_API itself: its features are unknown here. Any
    // event it enabled is handled as it is read.
    eo.on_finished = [this](const Status&) { eventfd_write(wake_fd_, 1); };
    if (opt_.send_ready && !eo.fill.prefetch.empty()) {
      // On the engine's filler thread. Drop() stops the engine (joining
      // that thread) before it closes the socket, so the descriptor is ours.
      eo.on_prefetched = [this, client] { SendReady(client); };
    }
    eo.fill.record_trace = opt_.fill.record_trace && client->report.id == 0;
    return eo;
  }

  // One byte on a fresh stream socket's empty buffer: it does not block.
  // A client that is already gone (EPIPE; no SIGPIPE: MSG_NOSIGNAL) is
  // noticed by its engine through end of stream, so the error is dropped.
  void SendReady(Client* c) {
    const char b = kReadyByte;
    env_->SendWithFd(c->sock, &b, 1, -1).status().IgnoreError();
    c->ready_sent = true;
  }

  const std::string path_;
  std::shared_ptr<const PageSource> source_;
  const ServeOptions opt_;
  Env* env_;
  int listen_fd_;
  int wake_fd_;
  std::thread thread_;
  std::vector<Pending> pending_;  // accept thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Client>> clients_;  // guarded by mu_
  uint64_t next_id_ = 0;                          // guarded by mu_
  size_t dropped_ = 0;                            // guarded by mu_
  bool stopped_ = false;                          // guarded by mu_
  bool paused_ = false;                           // accept loop ends for a handover
  std::atomic<bool> handed_over_{false};
  uint64_t refused_ = 0;         // guarded by mu_
  Status last_refusal_;          // guarded by mu_
  WorkingSetTrace first_trace_;  // guarded by mu_
};

// Serve handover (restore/server_handover.h): engines export their spaces,
// connections, listener and books go along; Import is the other side.
Result<restore::ServerExport> PageServerImpl::ExportForHandover() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_ || paused_) return Status::FailedPrecondition("the server is not serving");
    paused_ = true;
  }
  eventfd_write(wake_fd_, 1);
  if (thread_.joinable()) thread_.join();
  restore::ServerExport out;
  const auto now = std::chrono::steady_clock::now();
  out.quiesce_ns = std::chrono::nanoseconds(now.time_since_epoch()).count();
  out.listen_fd = std::exchange(listen_fd_, -1);
  for (Pending& p : pending_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now);
    out.pending.push_back({p.sock, p.uffd, std::move(p.body), std::max<int64_t>(0, left.count())});
  }
  pending_.clear();
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& c : clients_) {
    if (!c->report.active) {
      out.done.push_back(c->report);
      continue;
    }
    Result<restore::EngineExport> e = c->engine->Export();
    c->engine->Stop();
    c->report.active = e.ok();  // (not ok: the client went away meanwhile)
    if (!e.ok()) {
      env_->Close(c->sock).IgnoreError();  // gone anyway
      out.done.push_back(c->report);
      continue;
    }
    restore::HandoverClient h{c->report, c->sock, c->ready_sent.load(), std::move(*e)};
    h.report.stats = h.engine.stats;
    out.active.push_back(std::move(h));
  }
  clients_.clear();
  out.next_id = next_id_;
  out.refused = refused_;
  out.first_trace = first_trace_;
  return out;
}

void PageServerImpl::Import(restore::ServerExport state) {
  const auto now = std::chrono::steady_clock::now();
  for (restore::HandoverPending& p : state.pending) {
    pending_.push_back(
        {p.sock, p.uffd, std::move(p.body), now + std::chrono::milliseconds(p.ms_left)});
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    next_id_ = std::max(next_id_, state.next_id);
    refused_ += state.refused;
    first_trace_ = state.first_trace;
    for (const ClientReport& r : state.done) clients_.emplace_back(new Client{r, -1, {}, {}});
  }
  for (restore::HandoverClient& h : state.active) {
    auto c = std::make_shared<Client>();
    c->report = h.report;
    c->sock = h.sock;
    c->ready_sent = h.ready_sent;
    // A ready byte still owed with no prefetch left to wait for goes now.
    const bool owed =
        opt_.send_ready && !h.ready_sent && (opt_.fill.prefetch.empty() || h.engine.prefetch_done);
    c->engine = std::make_unique<restore::Engine>(source_, EngineOptionsFor(c.get()));
    c->engine->Adopt(std::move(h.engine));
    if (!Launch(c, owed).ok()) env_->Close(c->sock).IgnoreError();  // it sees end of stream
  }
}

}  // namespace

namespace restore {

Result<std::unique_ptr<PageServer>> StartPageServerOn(const std::string& socket_path,
                                                      std::shared_ptr<const PageSource> source,
                                                      const ServeOptions& options, Env* env,
                                                      int listen_fd, ServerExport* import) {
  Result<int> wake = env->EventfdCreate(0, EFD_NONBLOCK);
  if (!wake.ok()) {
    env->Close(listen_fd).IgnoreError();  // already failing
    if (import != nullptr) import->CloseAll();
    return wake.status();
  }
  auto server = std::make_unique<PageServerImpl>(socket_path, std::move(source), options, env,
                                                 listen_fd, *wake);
  if (import != nullptr) server->Import(std::move(*import));
  server->Begin();
  return std::unique_ptr<PageServer>(std::move(server));
}

}  // namespace restore

Result<std::unique_ptr<PageServer>> PageServer::Start(const std::string& socket_path,
                                                      std::shared_ptr<const PageSource> source,
                                                      const ServeOptions& options) {
  return StartPageServer(socket_path, std::move(source), options, Env::Default());
}

Result<std::unique_ptr<PageServer>> StartPageServer(const std::string& socket_path,
                                                    std::shared_ptr<const PageSource> source,
                                                    const ServeOptions& options, Env* env) {
  PW_RETURN_IF_ERROR(restore::CheckServeOptions(source.get(), options));
  Result<int> listen_fd = env->UnixListen(socket_path, 64);
  if (!listen_fd.ok()) return listen_fd.status().WithContext("page server");
  return restore::StartPageServerOn(socket_path, std::move(source), options, env, *listen_fd,
                                    nullptr);
}

}  // namespace pagewise
