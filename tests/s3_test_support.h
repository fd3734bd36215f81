// Shared by the tests/s3_*_test.cc programs: one throw-away RADOS Gateway per
// test program (started on first use, stopped at exit; a watchdog in
// scripts/rgw.sh stops it if the program dies), buckets with unique names,
// and an S3Client for it.
//
// Thread safety: call from the test's main thread.
#ifndef PAGEWISE_TESTS_S3_TEST_SUPPORT_H_
#define PAGEWISE_TESTS_S3_TEST_SUPPORT_H_

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "remote/aws_config.h"
#include "remote/s3_client.h"
#include "rgw_server.h"
#include "testing/test_util.h"

namespace pagewise::testing {

// The program's gateway; aborts the program if it cannot start (every S3
// test needs it, and scripts/install-deps.sh installs it).
inline bench::RgwServer& Rgw() {
  static std::unique_ptr<bench::RgwServer> server = [] {
    Result<std::unique_ptr<bench::RgwServer>> s = bench::RgwServer::Start();
    if (!s.ok()) {
      std::fprintf(stderr, "cannot start the S3 test server: %s\n", s.status().ToString().c_str());
      std::abort();
    }
    (*s)->ExportEnvironment();
    return std::move(s).value();
  }();
  return *server;
}

// An environment lookup holding only the gateway's endpoint and keys.
inline remote::EnvLookup RgwEnv(const std::string& secret_override = "") {
  bench::RgwServer& r = Rgw();
  const std::string endpoint = r.endpoint(), id = r.access_key();
  const std::string secret = secret_override.empty() ? r.secret_key() : secret_override;
  return [=](const std::string& name, std::string* v) {
    if (name == "AWS_ENDPOINT_URL")
      *v = endpoint;
    else if (name == "AWS_ACCESS_KEY_ID")
      *v = id;
    else if (name == "AWS_SECRET_ACCESS_KEY")
      *v = secret;
    else
      return false;
    return true;
  };
}

inline std::shared_ptr<remote::S3Client> RgwClient(const std::string& secret_override = "") {
  Result<remote::S3Config> cfg = remote::ResolveS3Config({}, RgwEnv(secret_override));
  EXPECT_TRUE(cfg.ok()) << cfg.status().ToString();
  Result<std::shared_ptr<remote::HttpEngine>> http = remote::HttpEngine::Create({});
  EXPECT_TRUE(http.ok()) << http.status().ToString();
  return std::make_shared<remote::S3Client>(*cfg, *http);
}

inline remote::Deadline In(int seconds) {
  return remote::Clock::now() + std::chrono::seconds(seconds);
}

// A new bucket with a unique name.
inline std::string NewBucket(const remote::S3Client& c) {
  static std::atomic<int> n{0};
  const std::string name = "pw-test-" + std::to_string(getpid()) + "-" + std::to_string(n++);
  Status s = c.CreateBucket(name, In(30));
  EXPECT_TRUE(s.ok()) << s.ToString();
  return name;
}

// Writes `len` bytes at `mem` as an image with one flat region (4 KiB
// pages; zero pages recorded as zero). With `parent`, only the pages that
// differ from `parent_mem` go into the new layer. Chunks of `chunk_bytes`.
inline Status WriteFlatImage(const std::string& path, const char* mem, size_t len,
                             const std::string& parent = "", const char* parent_mem = nullptr,
                             uint32_t chunk_bytes = 64 * 1024) {
  ImageWriteOptions o;
  o.parent = parent;
  o.compression = Compression::kLz4;
  o.chunk_bytes = chunk_bytes;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, ImageWriter::Create(path, o));
  if (parent.empty()) {
    Region r;
    r.length = len;
    r.page_size = 4096;
    r.kind = RegionKind::kFlat;
    r.name = "flat";
    PW_RETURN_IF_ERROR(w->AddRegion(r).status());
  }
  for (size_t off = 0; off < len; off += 4096) {
    if (parent_mem != nullptr && std::memcmp(parent_mem + off, mem + off, 4096) == 0) continue;
    PW_RETURN_IF_ERROR(w->AddPages(0, off, mem + off, 4096));
  }
  return w->Commit();
}

// A per-test chunk cache directory (PAGEWISE_CACHE_DIR) and short timeouts.
// The previous directory comes back when it goes.
class CacheDir {
 public:
  CacheDir() {
    if (const char* old = getenv("PAGEWISE_CACHE_DIR")) old_ = old;
    setenv("PAGEWISE_CACHE_DIR", dir_.path().c_str(), 1);
    setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "20000", 1);
  }
  ~CacheDir() {
    if (old_.empty()) {
      unsetenv("PAGEWISE_CACHE_DIR");
    } else {
      setenv("PAGEWISE_CACHE_DIR", old_.c_str(), 1);
    }
  }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  std::string old_;
};

// A lazy restore of the flat range [0, len) of `src` whose memory the test
// owns (Release()d: the test unmaps it, or parts of it, itself).
inline std::unique_ptr<LazyRestore> StartReleased(std::shared_ptr<PageSource> src, size_t len,
                                                  const RestoreOptions& o) {
  auto r = LazyRestore::Start(std::move(src), {{0, len, 0}}, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return nullptr;
  (*r)->Release();
  return std::move(*r);
}

// A TCP port nothing listens on (bound a moment ago, then closed).
inline int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTS_S3_TEST_SUPPORT_H_
