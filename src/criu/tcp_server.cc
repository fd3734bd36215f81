// CriuTcpServer: serves a dump's flat view over TCP (see criu.h and
// tcp_protocol.h). One thread accepts; each connection has its own thread
// (at most 2 x max_clients), so a demand connection is never behind a
// bulk one in the server either.
//
// Trust (docs/security.md applied to TCP clients): nothing a client sends
// is believed. The hello must match exactly; every request is bounded
// (length 1 .. max_request_bytes, inside the flat view); a client that
// breaks a rule, or is silent for idle_timeout_ms, is dropped alone;
// connections beyond the limit are refused at once. The server never
// writes a file and reads only the dump or image it was started on.
#include <poll.h>
#include <signal.h>
#include <xxhash.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "criu/dump.h"
#include "criu/sources.h"
#include "criu/tcp_protocol.h"
#include "pagewise/criu.h"
#include "sys/process.h"
#include "sys/tcp.h"

namespace pagewise {
namespace {

namespace wire = criu::wire;
constexpr int kHelloTimeoutMs = 5000;

class TcpServerImpl final : public CriuTcpServer {
 public:
  TcpServerImpl(std::shared_ptr<const PageSource> source, uint64_t digest, std::string what,
                CriuTcpServerOptions o, sys::TcpListener l, int wake)
      : source_(std::move(source)),
        digest_(digest),
        what_(std::move(what)),
        o_(o),
        listen_(l),
        wake_(wake) {
    accept_ = std::thread([this] { AcceptLoop(); });
  }
  ~TcpServerImpl() override { Stop(); }

  void Stop() override {
    if (stopped_.exchange(true)) return;
    const uint64_t one = 1;
    sys::WriteAll(wake_, &one, sizeof(one)).IgnoreError();  // eventfd: cannot block
    accept_.join();
    std::map<uint64_t, Conn> conns;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& [id, c] : conns_) sys::TcpShutdown(c.fd);  // wakes its thread
      conns.swap(conns_);
      for (auto& t : finished_) t.join();
      finished_.clear();
    }
    for (auto& [id, c] : conns) c.thread.join();
    sys::CloseFd(listen_.fd).IgnoreError();  // teardown
    sys::CloseFd(wake_).IgnoreError();
  }

  uint16_t port() const override { return listen_.port; }
  uint64_t requests() const override { return requests_.load(); }
  uint64_t clients_refused() const override { return refused_.load(); }
  std::string Describe() const override {
    return what_ + " on port " + std::to_string(listen_.port);
  }

 private:
  struct Conn {
    int fd = -1;
    std::thread thread;
  };

  void AcceptLoop() {
    for (;;) {
      struct pollfd p[2] = {{listen_.fd, POLLIN, 0}, {wake_, POLLIN, 0}};
      Result<int> n = Env::Default()->Poll(p, 2, -1);
      if (!n.ok() || stopped_.load() || (p[1].revents & POLLIN)) return;
      if (!(p[0].revents & POLLIN)) continue;
      std::string peer;
      Result<int> fd = sys::TcpAccept(listen_.fd, &peer);
      if (!fd.ok()) continue;  // the client gave up meanwhile
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& t : finished_) t.join();
      finished_.clear();
      if (conns_.size() >= 2 * o_.max_clients) {
        refused_++;
        sys::CloseFd(*fd).IgnoreError();  // over the limit: refused at once
        continue;
      }
      const uint64_t id = next_id_++;
      Conn& c = conns_[id];
      c.fd = *fd;
      c.thread = std::thread([this, id, fd = *fd] { Serve(id, fd); });
    }
  }

  // Replies to the hello; false if the client is refused.
  bool Handshake(int fd) {
    wire::Hello h{};
    if (!sys::TcpSetTimeouts(fd, kHelloTimeoutMs).ok() ||
        !sys::TcpRecvAll(fd, &h, sizeof(h)).ok()) {
      return false;
    }
    wire::HelloReply r{};
    std::memcpy(r.magic, wire::kMagic, sizeof(r.magic));
    r.version = wire::kVersion;
    r.digest = digest_;
    r.flat_size = source_->size();
    std::string why;
    if (!wire::MagicOk(h.magic) || h.version != wire::kVersion) {
      why = "not a pagewise CRIU page-server client (magic/version)";
    } else if (h.role != wire::kRoleDemand && h.role != wire::kRoleBulk) {
      why = "unknown connection role";
    } else if (h.digest != digest_ || h.flat_size != source_->size()) {
      why = "this server serves another dump (" + what_ + ")";
    }
    r.status = why.empty() ? 0 : 1;
    r.text_len = static_cast<uint32_t>(why.size());
    Status st = sys::TcpSendAll(fd, &r, sizeof(r));
    if (st.ok() && !why.empty()) st = sys::TcpSendAll(fd, why.data(), why.size());
    return st.ok() && why.empty();
  }

  void Serve(uint64_t id, int fd) {
    if (Handshake(fd) && sys::TcpSetTimeouts(fd, o_.idle_timeout_ms).ok()) {
      std::vector<char> buf;
      for (;;) {
        wire::Request q{};
        if (!sys::TcpRecvAll(fd, &q, sizeof(q)).ok()) break;  // gone, idle, or stopping
        wire::Response a{};
        a.id = q.id;
        std::string err;
        const uint64_t size = source_->size();
        if (q.len == 0 || q.len > o_.max_request_bytes || q.offset > size ||
            q.len > size - q.offset || q.reserved != 0) {
          err = "bad request: offset " + std::to_string(q.offset) + " length " +
                std::to_string(q.len) + " (flat size " + std::to_string(size) + ", at most " +
                std::to_string(o_.max_request_bytes) + " bytes a request)";
        } else {
          buf.resize(q.len);
          Status st = source_->Read(q.offset, buf.data(), q.len);
          if (!st.ok()) err = st.ToString();
        }
        requests_++;
        if (!err.empty()) {
          if (err.size() > wire::kMaxText) err.resize(wire::kMaxText);
          a.status = 1;
          a.len = static_cast<uint32_t>(err.size());
          // The client learns why; a broken rule also ends the connection.
          if (sys::TcpSendAll(fd, &a, sizeof(a)).ok())
            sys::TcpSendAll(fd, err.data(), err.size()).IgnoreError();
          break;
        }
        a.len = q.len;
        a.checksum = XXH64(buf.data(), q.len, 0);
        if (!sys::TcpSendAll(fd, &a, sizeof(a)).ok() ||
            !sys::TcpSendAll(fd, buf.data(), q.len).ok()) {
          break;
        }
      }
    }
    sys::CloseFd(fd).IgnoreError();  // this connection is over
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(id);
    if (it != conns_.end()) {
      finished_.push_back(std::move(it->second.thread));
      conns_.erase(it);
    }
  }

  std::shared_ptr<const PageSource> source_;
  const uint64_t digest_;
  const std::string what_;
  const CriuTcpServerOptions o_;
  const sys::TcpListener listen_;
  const int wake_;
  std::thread accept_;
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> requests_{0}, refused_{0};
  std::mutex mu_;
  std::map<uint64_t, Conn> conns_;     // guarded by mu_
  std::vector<std::thread> finished_;  // guarded by mu_: exited, to join
  uint64_t next_id_ = 0;               // guarded by mu_
};

}  // namespace

Result<std::unique_ptr<CriuTcpServer>> CriuTcpServer::Start(const std::string& listen,
                                                            const std::string& dump_dir,
                                                            const std::string& image_path,
                                                            const CriuTcpServerOptions& options) {
  if (dump_dir.empty() == image_path.empty()) {
    return Status::InvalidArgument("serve --tcp: give --criu-dir DIR or --image IMAGE");
  }
  if (options.max_clients == 0 || options.max_request_bytes == 0 ||
      options.max_request_bytes > (64u << 20)) {
    return Status::InvalidArgument("serve --tcp: max_clients >= 1, max_request_bytes 1..64 MiB");
  }
  std::shared_ptr<const PageSource> source;
  uint64_t digest = 0;
  std::string what;
  if (!dump_dir.empty()) {
    PW_ASSIGN_OR_RETURN(std::shared_ptr<criu::CriuDump> d, criu::CriuDump::Open(dump_dir));
    digest = d->layout_digest();
    source = criu::DumpSource(d);
    what = "CRIU dump " + dump_dir;
  } else {
    PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(image_path));
    PW_ASSIGN_OR_RETURN(std::vector<criu::DumpRegion> layout, criu::ImageLayout(*img, image_path));
    digest = criu::LayoutDigest(layout);
    source = ImageSource(std::shared_ptr<const Image>(std::move(img)));
    what = "image " + image_path;
  }
  PW_ASSIGN_OR_RETURN(int wake, Env::Default()->EventfdCreate(0, 0));
  Result<sys::TcpListener> l = sys::TcpListen(listen, 64);
  if (!l.ok()) {
    sys::CloseFd(wake).IgnoreError();  // already failing
    return l.status().WithContext("serve --tcp");
  }
  return std::unique_ptr<CriuTcpServer>(
      std::make_unique<TcpServerImpl>(std::move(source), digest, what, options, *l, wake));
}

}  // namespace pagewise

namespace pagewise {

Status RunCriuTcpServer(const std::string& listen, const std::string& dump_dir,
                        const std::string& image_path, const CriuTcpServerOptions& options,
                        int status_fd, const std::function<void(const std::string&)>& log) {
  PW_RETURN_IF_ERROR(sys::BlockTerminationSignals());
  PW_ASSIGN_OR_RETURN(std::unique_ptr<CriuTcpServer> s,
                      CriuTcpServer::Start(listen, dump_dir, image_path, options));
  if (log) log("serving " + s->Describe());
  if (status_fd >= 0) {
    const char zero = 0;
    Status st = sys::WriteAll(status_fd, &zero, 1);
    sys::CloseFd(status_fd).IgnoreError();  // written once, then closed
    PW_RETURN_IF_ERROR(st.WithContext("--status-fd"));
  }
  const int sig = sys::WaitTerminationSignal();
  if (log) {
    log("stopping on signal " + std::to_string(sig) + " after " + std::to_string(s->requests()) +
        " requests (" + std::to_string(s->clients_refused()) + " connections refused)");
  }
  s->Stop();
  return Status::Ok();
}

}  // namespace pagewise
