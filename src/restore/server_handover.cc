// Serve handover: the protocol between an old page server (HandoverOffer)
// and its successor (TakeOverPageServer), over a SOCK_SEQPACKET control
// socket. See include/pagewise/serve_handover.h for the steps and the
// guarantees; restore/server_handover.h for what the server hands over.
//
// Messages: a 8-byte header {u32 type, u32 more} and a payload (JSON), at
// most kPart bytes each; a longer payload goes in parts (more = 1 on all
// but the last). A descriptor rides on the first part of a message.
//   successor -> old:  HELLO {version, pid}
//   old -> successor:  CHECK {size, samples [[offset, hash]...]}
//   successor -> old:  GO, or ABORT {reason}
//   old -> successor:  LISTEN {books} +fd, PENDING {...} +fd [FD +uffd],
//                      CLIENT {report, engine} +fd, FD +uffd per space..., END
//   successor -> old:  TAKEN
#include "restore/server_handover.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "image/format.h"
#include "pagewise/serve_handover.h"
#include "sys/env.h"
#include "sys/fd_util.h"
#include "sys/process.h"
#include "sys/unix_seqpacket.h"

namespace pagewise {
namespace {

using nlohmann::json;
using restore::ServerExport;

enum Type : uint32_t {
  kHello = 1,
  kCheck,
  kGo,
  kAbort,
  kListen,
  kPending,
  kClient,
  kFd,
  kEnd,
  kTaken
};
constexpr size_t kPart = 32 << 10;
constexpr int kVersion = 1;
constexpr int kSetupTimeoutMs = 10000;  // before GO only (see the header)
constexpr int kSamples = 32;

struct Message {
  uint32_t type = 0;
  std::string payload;
  int fd = -1;  // owned by the receiver
};

// One end of the control connection.
class Channel {
 public:
  Channel(Env* env, int sock) : env_(env), sock_(sock) {}
  ~Channel() { env_->Close(sock_).IgnoreError(); }  // teardown
  int sock() const { return sock_; }

  Status Send(uint32_t type, const std::string& payload = {}, int fd = -1) {
    size_t off = 0;
    do {
      const size_t n = std::min(kPart, payload.size() - off);
      const uint32_t more = off + n < payload.size() ? 1 : 0;
      std::string frame(8, '\0');
      StoreLe32(reinterpret_cast<uint8_t*>(frame.data()), type);
      StoreLe32(reinterpret_cast<uint8_t*>(frame.data()) + 4, more);
      frame.append(payload, off, n);
      PW_ASSIGN_OR_RETURN(size_t sent,
                          env_->SendWithFd(sock_, frame.data(), frame.size(), off == 0 ? fd : -1));
      if (sent != frame.size()) return Status::IoError("handover: short message");
      off += n;
    } while (off < payload.size());
    return Status::Ok();
  }

  // timeout_ms < 0: no limit.
  Result<Message> Recv(int timeout_ms) {
    Message m;
    std::vector<char> buf(kPart + 64);
    for (bool first = true;; first = false) {
      struct pollfd p = {sock_, POLLIN, 0};
      PW_ASSIGN_OR_RETURN(int n, env_->Poll(&p, 1, timeout_ms));
      if (n == 0) return Status(Code::kRetry, 0, "handover: the other server did not answer");
      int fd = -1;
      PW_ASSIGN_OR_RETURN(size_t got, env_->RecvWithFd(sock_, buf.data(), buf.size(), &fd));
      if (fd >= 0 && (!first || m.fd >= 0)) env_->Close(fd).IgnoreError();  // not ours
      if (fd >= 0 && first) m.fd = fd;
      if (got == 0) return Status::PeerGone("handover: the other server went away");
      if (got < 8) return Status::Corruption("handover: a message shorter than its header");
      const uint8_t* b = reinterpret_cast<const uint8_t*>(buf.data());
      m.type = LoadLe32(b);
      m.payload.append(buf.data() + 8, got - 8);
      if (LoadLe32(b + 4) == 0) return m;
      if (m.payload.size() > (256u << 20)) return Status::Corruption("handover: message too big");
    }
  }

  // Receives a message of `type` (ABORT: its reason as an error).
  Result<Message> Expect(uint32_t type, int timeout_ms) {
    PW_ASSIGN_OR_RETURN(Message m, Recv(timeout_ms));
    if (m.type == kAbort) {
      const json j = json::parse(m.payload, nullptr, false);
      return Status::FailedPrecondition("handover refused: " +
                                        (j.is_object() ? j.value("reason", std::string()) : ""));
    }
    if (m.type != type) {
      if (m.fd >= 0) env_->Close(m.fd).IgnoreError();
      return Status::Corruption("handover: unexpected message " + std::to_string(m.type));
    }
    return m;
  }

 private:
  Env* env_;
  int sock_;
};

json ReportJson(const ClientReport& r) {
  json regions = json::array();
  for (const Region& g : r.regions) regions.push_back({g.address, g.length, g.offset, g.page_size});
  return {{"id", r.id},
          {"pid", r.pid},
          {"regions", regions},
          {"code", static_cast<int>(r.status.code())},
          {"message", r.status.message()},
          {"stats", restore::EncodeRestoreStats(r.stats)}};
}

ClientReport ReportFrom(const json& j) {
  ClientReport r;
  r.id = j.value("id", uint64_t{0});
  r.pid = j.value("pid", 0);
  for (const json& g : j.value("regions", json::array())) {
    Region reg;
    reg.address = g.at(0).get<uint64_t>();
    reg.length = g.at(1).get<uint64_t>();
    reg.offset = g.at(2).get<uint64_t>();
    reg.page_size = g.at(3).get<uint32_t>();
    r.regions.push_back(reg);
  }
  const int code = j.value("code", 0);
  if (code != 0) r.status = Status(static_cast<Code>(code), 0, j.value("message", std::string()));
  r.stats = restore::DecodeRestoreStats(j.value("stats", std::string()));
  return r;
}

// Hash of the source's page at `offset` (what both servers must agree on).
Result<uint64_t> SampleHash(const PageSource& source, uint64_t offset) {
  std::vector<char> page(PageSize());
  PW_RETURN_IF_ERROR(source.Read(offset, page.data(), page.size()));
  return image::Checksum64(page.data(), page.size());
}

}  // namespace

void restore::ServerExport::CloseAll() {
  Env* env = Env::Default();
  auto drop = [&](int& fd) {
    if (fd >= 0) env->Close(fd).IgnoreError();  // dropping our copy
    fd = -1;
  };
  drop(listen_fd);
  for (HandoverPending& p : pending) {
    drop(p.sock);
    drop(p.uffd);
  }
  for (HandoverClient& c : active) {
    drop(c.sock);
    c.engine.CloseAll();
  }
}

Status restore::CheckServeOptions(const PageSource* source, const ServeOptions& options) {
  if (source == nullptr) return Status::InvalidArgument("page server: no source");
  return ValidateServeOptions(options).WithContext("page server options");
}

restore::HandoverPort* restore::HandoverPortOf(PageServer* server) {
  return dynamic_cast<HandoverPort*>(server);  // pagewise's server implements both
}

std::string HandoverSocketPath(const std::string& socket_path) { return socket_path + ".handover"; }

// ---- the successor --------------------------------------------------------

namespace {

// Receives everything after GO into *out (descriptors owned by *out).
Status ReceiveState(Channel& ch, size_t page_size, ServerExport* out) {
  PW_ASSIGN_OR_RETURN(Message listen, ch.Expect(kListen, -1));
  out->listen_fd = listen.fd;
  const json books = json::parse(listen.payload, nullptr, false);
  if (!books.is_object() || out->listen_fd < 0) {
    return Status::Corruption("handover: the listening socket did not arrive");
  }
  out->quiesce_ns = books.value("quiesce_ns", int64_t{0});
  out->next_id = books.value("next_id", uint64_t{0});
  out->refused = books.value("refused", uint64_t{0});
  for (const json& r : books.value("done", json::array())) out->done.push_back(ReportFrom(r));
  for (;;) {
    PW_ASSIGN_OR_RETURN(Message m, ch.Recv(-1));
    if (m.type == kEnd) return Status::Ok();
    const json j = json::parse(m.payload, nullptr, false);
    if (!j.is_object() || m.fd < 0 || (m.type != kPending && m.type != kClient)) {
      if (m.fd >= 0) Env::Default()->Close(m.fd).IgnoreError();
      return Status::Corruption("handover: malformed message " + std::to_string(m.type));
    }
    if (m.type == kPending) {
      restore::HandoverPending p{m.fd, -1, j.value("body", std::string()),
                                 j.value("ms_left", int64_t{0})};
      out->pending.push_back(p);
      if (j.value("has_uffd", false)) {
        PW_ASSIGN_OR_RETURN(Message u, ch.Expect(kFd, -1));
        out->pending.back().uffd = u.fd;
      }
      continue;
    }
    restore::HandoverClient c;
    c.sock = m.fd;
    c.report = ReportFrom(j.value("report", json::object()));
    c.report.active = true;
    c.ready_sent = j.value("ready_sent", false);
    Result<restore::EngineExport> e =
        restore::DecodeEngineExport(j.value("engine", std::string()), page_size);
    if (!e.ok()) {
      Env::Default()->Close(c.sock).IgnoreError();
      return e.status();
    }
    c.engine = std::move(*e);
    out->active.push_back(std::move(c));
    for (restore::SpaceExport& s : out->active.back().engine.spaces) {
      PW_ASSIGN_OR_RETURN(Message u, ch.Expect(kFd, -1));
      s.uffd = u.fd;
      if (s.uffd < 0) return Status::Corruption("handover: a userfaultfd did not arrive");
    }
  }
}

}  // namespace

Result<std::unique_ptr<PageServer>> TakeOverPageServer(const std::string& socket_path,
                                                       std::shared_ptr<const PageSource> source,
                                                       const ServeOptions& options,
                                                       HandoverReport* report) {
  PW_RETURN_IF_ERROR(restore::CheckServeOptions(source.get(), options).WithContext("take over"));
  Env* env = Env::Default();
  const std::string control = HandoverSocketPath(socket_path);
  Result<int> sock = sys::ConnectSeqpacket(control);
  if (!sock.ok()) {
    return sock.status().WithContext("take over: no server offers handover at " + control);
  }
  Channel ch(env, *sock);
  PW_ASSIGN_OR_RETURN(uid_t peer_uid, sys::PeerUid(ch.sock()));
  if (peer_uid != sys::EffectiveUid() && peer_uid != 0) {
    return Status(Code::kPermissionDenied, 0,
                  "take over: the server at " + control + " belongs to another user");
  }
  Result<pid_t> peer = env->PeerPid(ch.sock());
  PW_RETURN_IF_ERROR(ch.Send(kHello, json{{"version", kVersion}, {"pid", sys::SelfPid()}}.dump()));
  PW_ASSIGN_OR_RETURN(Message check, ch.Expect(kCheck, kSetupTimeoutMs));
  const json c = json::parse(check.payload, nullptr, false);
  std::string mismatch;
  if (!c.is_object() || c.value("size", uint64_t{0}) != source->size()) {
    mismatch = "the running server's source has another size";
  } else {
    for (const json& s : c.value("samples", json::array())) {
      const uint64_t off = s.at(0).get<uint64_t>();
      Result<uint64_t> h = SampleHash(*source, off);
      if (!h.ok() || *h != s.at(1).get<uint64_t>()) {
        mismatch = "the sources differ at offset " + std::to_string(off);
        break;
      }
    }
  }
  if (!mismatch.empty()) {
    ch.Send(kAbort, json{{"reason", mismatch}}.dump()).IgnoreError();  // it resumes either way
    return Status::FailedPrecondition("take over: " + mismatch + " (serve the same image)");
  }
  PW_RETURN_IF_ERROR(ch.Send(kGo));
  ServerExport state;
  Status st = ReceiveState(ch, PageSize(), &state);
  if (st.ok()) st = ch.Send(kTaken);
  if (!st.ok()) {
    state.CloseAll();  // the old server sees us go and serves on
    return st.WithContext("take over");
  }
  HandoverReport r;
  r.peer = peer.ok() ? *peer : 0;
  r.clients = state.active.size();
  r.pending = state.pending.size();
  for (const restore::HandoverClient& hc : state.active) r.spaces += hc.engine.spaces.size();
  const int64_t quiesce = state.quiesce_ns;
  const int listen_fd = std::exchange(state.listen_fd, -1);
  Result<std::unique_ptr<PageServer>> server =
      restore::StartPageServerOn(socket_path, std::move(source), options, env, listen_fd, &state);
  r.stall_ms = static_cast<double>(static_cast<int64_t>(NowNs()) - quiesce) / 1e6;
  if (report != nullptr) *report = r;
  return server;
}

// ---- the old server -------------------------------------------------------

namespace {

class HandoverOfferImpl final : public HandoverOffer {
 public:
  HandoverOfferImpl(PageServer* server, std::shared_ptr<const PageSource> source,
                    std::function<void(const HandoverReport&)> done, int listen_fd, int stop_fd,
                    std::string path)
      : server_(server),
        source_(std::move(source)),
        done_(std::move(done)),
        listen_fd_(listen_fd),
        stop_fd_(stop_fd),
        path_(std::move(path)) {
    // Returns once the thread runs. A thread that first runs later may find
    // the process out of descriptors (a flood of connections): harmless to
    // Loop(), but a UBSan build checks the thread's start through a pipe it
    // cannot create then, reports an "invalid vptr" and aborts the server
    // (ServeHostileFile.RealDescriptorExhaustionIsSurvived under load).
    std::promise<void> running;
    std::future<void> started = running.get_future();
    thread_ = std::thread([this, &running] {
      running.set_value();
      Loop();
    });
    started.wait();
  }
  ~HandoverOfferImpl() override {
    sys::SignalEventfd(stop_fd_);
    thread_.join();
    Env* env = Env::Default();
    env->Close(listen_fd_).IgnoreError();  // teardown
    env->Close(stop_fd_).IgnoreError();
    if (!handed_over_) env->Unlink(path_).IgnoreError();  // the successor's now
  }
  Status last_error() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return last_error_;
  }

 private:
  void Loop() {
    while (!handed_over_) {
      struct pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      Result<int> n = Env::Default()->Poll(fds, 2, -1);
      if (!n.ok() || (fds[1].revents & POLLIN)) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      Result<int> conn = sys::AcceptSeqpacket(listen_fd_);
      if (!conn.ok()) continue;
      Channel ch(Env::Default(), *conn);
      const Status st = Session(ch);
      std::lock_guard<std::mutex> lk(mu_);
      if (!st.ok()) last_error_ = st;
    }
  }

  Status Session(Channel& ch) {
    PW_ASSIGN_OR_RETURN(uid_t uid, sys::PeerUid(ch.sock()));
    if (uid != sys::EffectiveUid() && uid != 0) {
      return Status(Code::kPermissionDenied, 0, "handover asked by another user: refused");
    }
    restore::HandoverPort* port = restore::HandoverPortOf(server_);
    if (port == nullptr) return Status::Internal("handover: not a pagewise page server");
    PW_ASSIGN_OR_RETURN(Message hello, ch.Expect(kHello, kSetupTimeoutMs));
    Result<pid_t> peer = Env::Default()->PeerPid(ch.sock());
    PW_RETURN_IF_ERROR(ch.Send(kCheck, CheckJson()));
    PW_RETURN_IF_ERROR(ch.Expect(kGo, kSetupTimeoutMs).status());
    PW_ASSIGN_OR_RETURN(ServerExport state, port->ExportForHandover());
    HandoverReport r;
    r.peer = peer.ok() ? *peer : 0;
    r.clients = state.active.size();
    r.pending = state.pending.size();
    Status st = SendState(ch, state, &r.spaces);
    // No timeout from here: the successor starts serving right after it
    // says TAKEN, so resuming before that word (or its death) could make
    // two servers serve the same clients.
    if (st.ok()) st = ch.Expect(kTaken, -1).status();
    if (!st.ok()) {
      port->ResumeFromExport(std::move(state)).IgnoreError();  // serve on, as before
      return st.WithContext("handover failed; serving on");
    }
    port->HandedOver();
    handed_over_ = true;
    state.CloseAll();  // our copies; the successor holds its own
    r.stall_ms = static_cast<double>(static_cast<int64_t>(NowNs()) - state.quiesce_ns) / 1e6;
    if (done_) done_(r);
    return Status::Ok();
  }

  std::string CheckJson() {
    json samples = json::array();
    const uint64_t ps = PageSize();
    const uint64_t pages = source_->size() / ps;
    std::mt19937_64 rng(static_cast<uint64_t>(static_cast<int64_t>(NowNs())));
    for (int i = 0; i < kSamples && pages > 0; ++i) {
      const uint64_t off = (i == 0 ? 0 : rng() % pages) * ps;
      Result<uint64_t> h = SampleHash(*source_, off);
      if (h.ok()) samples.push_back({off, *h});
    }
    return json{{"size", source_->size()}, {"samples", samples}}.dump();
  }

  static Status SendState(Channel& ch, const ServerExport& s, size_t* spaces) {
    json done = json::array();
    for (const ClientReport& r : s.done) done.push_back(ReportJson(r));
    PW_RETURN_IF_ERROR(ch.Send(kListen,
                               json{{"quiesce_ns", s.quiesce_ns},
                                    {"next_id", s.next_id},
                                    {"refused", s.refused},
                                    {"done", done}}
                                   .dump(),
                               s.listen_fd));
    for (const restore::HandoverPending& p : s.pending) {
      const json j{{"body", p.body}, {"ms_left", p.ms_left}, {"has_uffd", p.uffd >= 0}};
      PW_RETURN_IF_ERROR(ch.Send(kPending, j.dump(), p.sock));
      if (p.uffd >= 0) PW_RETURN_IF_ERROR(ch.Send(kFd, {}, p.uffd));
    }
    for (const restore::HandoverClient& c : s.active) {
      const json j{{"report", ReportJson(c.report)},
                   {"ready_sent", c.ready_sent},
                   {"engine", restore::EncodeEngineExport(c.engine)}};
      PW_RETURN_IF_ERROR(ch.Send(kClient, j.dump(), c.sock));
      for (const restore::SpaceExport& sp : c.engine.spaces) {
        PW_RETURN_IF_ERROR(ch.Send(kFd, {}, sp.uffd));
        ++*spaces;
      }
    }
    return ch.Send(kEnd);
  }

  PageServer* server_;
  std::shared_ptr<const PageSource> source_;
  std::function<void(const HandoverReport&)> done_;
  int listen_fd_;
  int stop_fd_;
  std::string path_;
  std::thread thread_;
  std::atomic<bool> handed_over_{false};
  mutable std::mutex mu_;
  Status last_error_;  // guarded by mu_
};

}  // namespace

Result<std::unique_ptr<HandoverOffer>> HandoverOffer::Start(
    PageServer* server, std::shared_ptr<const PageSource> source,
    std::function<void(const HandoverReport&)> on_handed_over) {
  if (restore::HandoverPortOf(server) == nullptr || source == nullptr) {
    return Status::InvalidArgument("handover offer: needs a running pagewise page server");
  }
  const std::string path = HandoverSocketPath(server->socket_path());
  PW_ASSIGN_OR_RETURN(int fd, sys::ListenSeqpacket(path, 4));
  Result<int> stop = Env::Default()->EventfdCreate(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!stop.ok()) {
    Env::Default()->Close(fd).IgnoreError();  // already failing
    return stop.status();
  }
  return std::unique_ptr<HandoverOffer>(std::make_unique<HandoverOfferImpl>(
      server, std::move(source), std::move(on_handed_over), fd, *stop, path));
}

}  // namespace pagewise
