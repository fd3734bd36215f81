// TCP socket wrappers (see tcp.h).
#include "sys/tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pagewise::sys {
namespace {

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_INET;
};

Result<Addr> Parse(const std::string& hp) {
  const size_t colon = hp.rfind(':');
  if (colon == std::string::npos || colon + 1 >= hp.size()) {
    return Status::InvalidArgument("address '" + hp + "' is not HOST:PORT");
  }
  std::string host = hp.substr(0, colon);
  const std::string port_s = hp.substr(colon + 1);
  char* end = nullptr;
  const unsigned long port = std::strtoul(port_s.c_str(), &end, 10);
  if (*end != 0 || port > 65535) return Status::InvalidArgument("bad port in '" + hp + "'");
  Addr a;
  if (host == "localhost") host = "127.0.0.1";
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &s6->sin6_addr) != 1) {
      return Status::InvalidArgument("bad IPv6 address in '" + hp + "'");
    }
    a.len = sizeof(*s6);
    a.family = AF_INET6;
    return a;
  }
  auto* s4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  s4->sin_family = AF_INET;
  s4->sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &s4->sin_addr) != 1) {
    return Status::InvalidArgument("bad IPv4 address in '" + hp + "' (give A.B.C.D:PORT)");
  }
  a.len = sizeof(*s4);
  return a;
}

void NoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // best effort: latency only
}

}  // namespace

Result<TcpListener> TcpListen(const std::string& host_port, int backlog) {
  PW_ASSIGN_OR_RETURN(Addr a, Parse(host_port));
  const int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0 || listen(fd, backlog) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "bind/listen " + host_port);
  }
  TcpListener l;
  l.fd = fd;
  sockaddr_storage got{};
  socklen_t len = sizeof(got);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&got), &len) == 0) {
    l.port = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                             : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  }
  return l;
}

Result<int> TcpAccept(int listen_fd, std::string* peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int fd;
  do {
    fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "accept");
  NoDelay(fd);
  if (peer) {
    char buf[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (ss.ss_family == AF_INET) {
      auto* s = reinterpret_cast<sockaddr_in*>(&ss);
      inet_ntop(AF_INET, &s->sin_addr, buf, sizeof(buf));
      port = ntohs(s->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
      inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof(buf));
      port = ntohs(s->sin6_port);
    }
    *peer = std::string(buf) + ":" + std::to_string(port);
  }
  return fd;
}

Result<int> TcpConnect(const std::string& host_port, int timeout_ms) {
  PW_ASSIGN_OR_RETURN(Addr a, Parse(host_port));
  const int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket");
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&a.ss), a.len);
  int err = rc == 0 ? 0 : errno;
  if (rc != 0 && err == EINPROGRESS) {
    struct pollfd p = {fd, POLLOUT, 0};
    do {
      rc = poll(&p, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) {
      close(fd);
      return Status::PeerGone("connecting to " + host_port + " timed out after " +
                              std::to_string(timeout_ms) + " ms (is the page server reachable?)");
    }
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  }
  if (err != 0) {
    close(fd);
    return Status(Code::kPeerGone, err,
                  "connecting to " + host_port + ": " + std::strerror(err) +
                      " (is `pagewise serve --tcp` running there?)");
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  NoDelay(fd);
  return fd;
}

Status TcpSetTimeouts(int fd, int timeout_ms) {
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
    return ErrnoStatus(errno, "setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
  }
  return Status::Ok();
}

Status TcpSendAll(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    const ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return Status::PeerGone("send timed out (the peer does not read: network cut?)");
    }
    if (n < 0) return Status(Code::kPeerGone, errno, std::string("send: ") + std::strerror(errno));
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status TcpRecvAll(int fd, void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    const ssize_t n = recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return Status::PeerGone("receive timed out (no answer: network cut or peer stuck?)");
    }
    if (n < 0) return Status(Code::kPeerGone, errno, std::string("recv: ") + std::strerror(errno));
    if (n == 0) return Status::PeerGone("the peer closed the connection");
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

void TcpShutdown(int fd) { shutdown(fd, SHUT_RDWR); }

}  // namespace pagewise::sys
