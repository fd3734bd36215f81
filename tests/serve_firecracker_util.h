// Helpers for the tests of the page server against Firecracker-style
// clients (tests/serve_firecracker_*_test.cc, tests/serve_lazy_client_test.cc):
// the client is testing::VmmClient (written from the handshake's
// description only), the server binary is hostile::CliServer; here are the
// few pieces those tests add: page checks of a client's memory, a served
// flat memory file, and waiting for a thread to block in a fault.
// Header-only, for tests.
//
// Thread safety: used by the test's thread (WaitBlockedInUffd may watch any
// thread of the process).
#ifndef PAGEWISE_TESTS_SERVE_FIRECRACKER_UTIL_H_
#define PAGEWISE_TESTS_SERVE_FIRECRACKER_UTIL_H_

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "restore/restore_testing.h"
#include "serve_hostile_util.h"
#include "testing/test_util.h"
#include "testing/vmm_client.h"

namespace pagewise::firecracker {

using hostile::CliServer;
using hostile::kFailureTimeout;
using hostile::kFailureTimeoutMs;
using hostile::WaitExit;
using testing::PatternBuffer;
using testing::Ps;
using testing::VmmClient;
using testing::VmmRegion;

// Pages of the client's region r that do not hold the file's content.
inline size_t Mismatches(const VmmClient& c, const PatternBuffer& file, size_t r) {
  size_t bad = 0;
  const VmmRegion& reg = c.regions()[r];
  const size_t first = reg.offset / Ps();
  for (size_t i = 0; i < reg.size / Ps(); ++i) bad += !file.Matches(c.mem(r) + i * Ps(), first + i);
  return bad;
}

// Writes `buf` to `dir` as the flat memory file guest.mem; returns its path.
inline std::string MemFile(const testing::TempDir& dir, const PatternBuffer& buf) {
  const std::string path = dir.File("guest.mem");
  EXPECT_TRUE(buf.WriteFile(path));
  return path;
}

// Writes `file` to `dir` as a flat memory file and serves it from an
// in-process PageServer listening on `sock`.
inline Result<std::unique_ptr<PageServer>> ServeMemFile(const testing::TempDir& dir,
                                                        const PatternBuffer& file,
                                                        const std::string& sock,
                                                        const ServeOptions& so = {}) {
  PW_ASSIGN_OR_RETURN(std::shared_ptr<PageSource> source, OpenMemFileSource(MemFile(dir, file)));
  return PageServer::Start(sock, source, so);
}

// Spins (yielding) until `tid` sleeps in handle_userfault; false if the
// thread finished instead, or after the failure deadline.
inline bool WaitBlockedInUffd(pid_t tid, const std::atomic<bool>& finished) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kFailureTimeoutMs);
  while (!testing::ThreadBlockedInUffd(tid)) {
    if (finished.load() || std::chrono::steady_clock::now() > deadline) return false;
    sched_yield();
  }
  return true;
}

}  // namespace pagewise::firecracker

#endif  // PAGEWISE_TESTS_SERVE_FIRECRACKER_UTIL_H_
