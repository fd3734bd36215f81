// ListenLoopbackTcp: parse, check loopback, socket/bind/listen.
#include "sys/loopback_tcp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace pagewise::sys {

Result<int> ListenLoopbackTcp(const std::string& address, int backlog, std::string* bound) {
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(
        "listen address '" + address + "': " + why +
        " (give a loopback address: 127.0.0.1:PORT, localhost:PORT or [::1]:PORT)");
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= address.size()) return bad("no port");
  std::string host = address.substr(0, colon);
  const std::string port_text = address.substr(colon + 1);
  char* end = nullptr;
  const unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (*end != '\0' || port > 65535) return bad("the port is not a number up to 65535");
  if (host == "localhost") host = "127.0.0.1";
  struct sockaddr_storage ss = {};
  socklen_t len = 0;
  int family;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1) {
      return bad("not an IPv6 address");
    }
    if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) return bad("not a loopback address");
    family = AF_INET6;
    len = sizeof(*a6);
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) return bad("not an IPv4 address");
    if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) return bad("not a loopback address");
    family = AF_INET;
    len = sizeof(*a4);
  }
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket for " + address);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, backlog) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "bind/listen " + address);
  }
  if (bound != nullptr) {
    struct sockaddr_storage got = {};
    socklen_t glen = sizeof(got);
    getsockname(fd, reinterpret_cast<sockaddr*>(&got), &glen);
    const uint16_t p = family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&got)->sin6_port)
                                          : ntohs(reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    *bound = host + ":" + std::to_string(p);
  }
  return fd;
}

Result<int> AcceptNonblocking(int listen_fd) {
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == EAGAIN || errno == ECONNABORTED)) {
    return Status(Code::kRetry, errno, "no connection to accept");
  }
  if (fd < 0) return ErrnoStatus(errno, "accept");
  return fd;
}

}  // namespace pagewise::sys
