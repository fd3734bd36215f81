// Shared by the tests/s3_*_test.cc programs: one throw-away RADOS Gateway per
// test program (started on first use, stopped at exit; a watchdog in
// scripts/rgw.sh stops it if the program dies), buckets with unique names,
// and an S3Client for it.
//
// Thread safety: call from the test's main thread.
#ifndef PAGEWISE_TESTS_S3_TEST_SUPPORT_H_
#define PAGEWISE_TESTS_S3_TEST_SUPPORT_H_

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>

#include "remote/aws_config.h"
#include "remote/s3_client.h"
#include "rgw_server.h"

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
    if (name == "AWS_ENDPOINT_URL") *v = endpoint;
    else if (name == "AWS_ACCESS_KEY_ID") *v = id;
    else if (name == "AWS_SECRET_ACCESS_KEY") *v = secret;
    else return false;
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

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTS_S3_TEST_SUPPORT_H_
