// Remote page source over TCP (see remote_source.h).
#include "criu/remote_source.h"

#include <xxhash.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <utility>

#include "criu/tcp_protocol.h"
#include "sys/process.h"
#include "sys/tcp.h"

namespace pagewise::criu {
namespace {

// For callers of plain Read(): reads of at most this many bytes are taken
// as demand reads (a fault's window). The engine says what a read is for
// through ReadWithPriority.
constexpr size_t kDemandMaxBytes = 64 << 10;
constexpr size_t kChunk = 1 << 20;  // the largest request we send

class Connection {
 public:
  Connection(std::string where, int fd) : where_(std::move(where)), fd_(fd) {}
  ~Connection() { sys::CloseFd(fd_).IgnoreError(); }  // teardown

  // One request, one answer: exactly len verified bytes at dst.
  Status Fetch(uint64_t offset, void* dst, size_t len) {
    std::lock_guard<std::mutex> lk(mu_);
    wire::Request q{};
    q.id = ++id_;
    q.offset = offset;
    q.len = static_cast<uint32_t>(len);
    PW_RETURN_IF_ERROR(sys::TcpSendAll(fd_, &q, sizeof(q)).WithContext(where_));
    wire::Response a{};
    PW_RETURN_IF_ERROR(sys::TcpRecvAll(fd_, &a, sizeof(a)).WithContext(where_));
    if (a.id != q.id) {
      return Status::Corruption(where_ + ": answer " + std::to_string(a.id) + " to request " +
                                std::to_string(q.id));
    }
    if (a.status != 0) {
      std::string text(std::min<uint32_t>(a.len, wire::kMaxText), '\0');
      sys::TcpRecvAll(fd_, text.data(), text.size()).IgnoreError();  // best effort: the reason
      return Status::IoError(where_ + " refused offset " + std::to_string(offset) + ": " + text);
    }
    if (a.len != len) {
      return Status::Corruption(where_ + ": " + std::to_string(a.len) + " bytes for a request of " +
                                std::to_string(len));
    }
    PW_RETURN_IF_ERROR(sys::TcpRecvAll(fd_, dst, len).WithContext(where_));
    if (XXH64(dst, len, 0) != a.checksum) {
      return Status::Corruption(where_ + ": checksum mismatch at offset " + std::to_string(offset));
    }
    return Status::Ok();
  }

 private:
  const std::string where_;
  const int fd_;
  std::mutex mu_;
  uint64_t id_ = 0;  // guarded by mu_
};

class RemoteSource final : public PageSource {
 public:
  RemoteSource(std::string host, uint64_t size, std::unique_ptr<Connection> demand,
               std::unique_ptr<Connection> bulk, RemoteSourceOptions o)
      : host_(std::move(host)),
        size_(size),
        demand_(std::move(demand)),
        bulk_(std::move(bulk)),
        o_(std::move(o)) {}

  uint64_t size() const override { return size_; }

  // Demand reads (faults) take the demand connection, everything else the
  // bulk one: a fault never waits behind a background batch.
  Status ReadWithPriority(uint64_t offset, void* dst, size_t len, ReadPriority p) const override {
    return Fetch(p == ReadPriority::kDemand ? demand_.get() : bulk_.get(), offset, dst, len);
  }

  // A caller that does not say: small reads are taken for faults.
  Status Read(uint64_t offset, void* dst, size_t len) const override {
    return Fetch(len <= kDemandMaxBytes ? demand_.get() : bulk_.get(), offset, dst, len);
  }

 private:
  Status Fetch(Connection* c, uint64_t offset, void* dst, size_t len) const {
    char* out = static_cast<char*>(dst);
    if (offset >= size_) {
      std::memset(dst, 0, len);
      return Status::Ok();
    }
    if (len > size_ - offset) {
      std::memset(out + (size_ - offset), 0, len - (size_ - offset));
      len = size_ - offset;
    }
    for (size_t done = 0; done < len;) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!failed_.ok()) return failed_;
      }
      const size_t n = std::min(kChunk, len - done);
      Status st = c->Fetch(offset + done, out + done, n);
      if (!st.ok()) return Lost(st);
      done += n;
    }
    return Status::Ok();
  }

 public:
  std::string Describe() const override {
    return "page server " + host_ + " (demand and bulk connections)";
  }

 private:
  // The first failure ends the source: later reads fail the same way.
  Status Lost(const Status& st) const {
    Status out = Status(Code::kPeerGone, st.err(),
                        "page server " + host_ + " lost: " + st.ToString() +
                            "; pages not yet restored cannot be read");
    bool first = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (failed_.ok()) {
        failed_ = out;
        first = true;
      } else {
        out = failed_;
      }
    }
    if (first && o_.on_failure) o_.on_failure(out);
    return out;
  }

  const std::string host_;
  const uint64_t size_;
  std::unique_ptr<Connection> demand_, bulk_;
  const RemoteSourceOptions o_;
  mutable std::mutex mu_;
  mutable Status failed_;  // guarded by mu_
};

Result<std::unique_ptr<Connection>> Open(const std::string& host_port, const CriuDump& layout,
                                         uint32_t role, int timeout_ms) {
  PW_ASSIGN_OR_RETURN(int fd, sys::TcpConnect(host_port, timeout_ms));
  auto c = std::make_unique<Connection>(
      "page server " + host_port + (role == wire::kRoleDemand ? " (demand)" : " (bulk)"), fd);
  PW_RETURN_IF_ERROR(sys::TcpSetTimeouts(fd, timeout_ms));
  wire::Hello h{};
  std::memcpy(h.magic, wire::kMagic, sizeof(h.magic));
  h.version = wire::kVersion;
  h.role = role;
  h.digest = layout.layout_digest();
  h.flat_size = layout.flat_size();
  PW_RETURN_IF_ERROR(sys::TcpSendAll(fd, &h, sizeof(h)).WithContext("page server " + host_port));
  wire::HelloReply r{};
  PW_RETURN_IF_ERROR(sys::TcpRecvAll(fd, &r, sizeof(r)).WithContext("page server " + host_port));
  if (!wire::MagicOk(r.magic) || r.version != wire::kVersion) {
    return Status::InvalidArgument(host_port + " is not a pagewise CRIU page server (serve --tcp)");
  }
  if (r.status != 0) {
    std::string text(std::min<uint32_t>(r.text_len, wire::kMaxText), '\0');
    sys::TcpRecvAll(fd, text.data(), text.size()).IgnoreError();  // best effort: the reason
    return Status::InvalidArgument("page server " + host_port + " refused " + layout.dir() + ": " +
                                   text);
  }
  if (r.digest != layout.layout_digest() || r.flat_size != layout.flat_size()) {
    return Status::InvalidArgument("page server " + host_port + " serves another dump than " +
                                   layout.dir());
  }
  return c;
}

}  // namespace

Result<std::shared_ptr<PageSource>> ConnectRemoteSource(const std::string& host_port,
                                                        const CriuDump& layout,
                                                        const RemoteSourceOptions& options) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Connection> demand,
                      Open(host_port, layout, wire::kRoleDemand, options.timeout_ms));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Connection> bulk,
                      Open(host_port, layout, wire::kRoleBulk, options.timeout_ms));
  return std::shared_ptr<PageSource>(std::make_shared<RemoteSource>(
      host_port, layout.flat_size(), std::move(demand), std::move(bulk), options));
}

}  // namespace pagewise::criu
