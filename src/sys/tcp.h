// TCP sockets for the CRIU page server and its remote page source: the
// raw socket calls live here (PLAN.md "Raw system calls").
//
// Addresses are "A.B.C.D:PORT" (IPv4) or "[IPv6]:PORT"; "localhost" is
// 127.0.0.1. Connected sockets have TCP_NODELAY set (small demand frames
// must not wait for Nagle) and may get send/receive timeouts, after which
// a call fails with kPeerGone saying it timed out.
//
// Thread safety: stateless wrappers; one socket may be used by one reader
// and one writer at a time.
#ifndef PAGEWISE_SYS_TCP_H_
#define PAGEWISE_SYS_TCP_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "pagewise/status.h"

namespace pagewise::sys {

struct TcpListener {
  int fd = -1;
  uint16_t port = 0;  // the bound port (useful with port 0)
};

// socket + SO_REUSEADDR + bind + listen. kInvalidArgument on a bad address.
Result<TcpListener> TcpListen(const std::string& host_port, int backlog);
// accept4(SOCK_CLOEXEC); *peer (optional) gets "addr:port".
Result<int> TcpAccept(int listen_fd, std::string* peer);
// Connects within timeout_ms (kPeerGone if refused or timed out).
Result<int> TcpConnect(const std::string& host_port, int timeout_ms);
// SO_RCVTIMEO / SO_SNDTIMEO (0: none).
Status TcpSetTimeouts(int fd, int timeout_ms);
// Sends all of buf (MSG_NOSIGNAL: a closed peer is kPeerGone, no SIGPIPE).
Status TcpSendAll(int fd, const void* buf, size_t len);
// Receives exactly len bytes. End of stream or timeout: kPeerGone.
Status TcpRecvAll(int fd, void* buf, size_t len);
// shutdown(SHUT_RDWR): wakes a thread blocked on the socket.
void TcpShutdown(int fd);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_TCP_H_
