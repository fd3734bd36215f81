// The S3 client against a real S3 server (Ceph RADOS Gateway): signed PUT,
// GET, ranged GET, HEAD, listing, multipart upload, presigned GET; and its
// errors: missing object, missing bucket, wrong keys (no secret in the
// message), an endpoint that refuses or never answers (bounded time).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <random>

#include "remote/crypto.h"
#include "remote/sigv4.h"
#include "s3_test_support.h"

namespace pagewise::testing {
namespace {

using remote::Clock;

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(S3ClientTest, PutGetRangeHeadList) {
  auto c = RgwClient();
  const std::string b = NewBucket(*c);
  const std::vector<uint8_t> data = RandomBytes(200000, 1);
  const std::string hash = remote::HexLower(remote::Sha256(data.data(), data.size()));
  ASSERT_TRUE(c->PutObject(b, "dir/obj one", data.data(), data.size(), hash, In(30)).ok());
  Result<std::vector<uint8_t>> all =
      c->GetObject(b, "dir/obj one", 1 << 20, ReadPriority::kDemand, In(30));
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(*all, data);
  std::vector<uint8_t> part(1000);
  ASSERT_TRUE(c->GetRange(b, "dir/obj one", 12345, part.size(), part.data(),
                          ReadPriority::kPrefetch, In(30))
                  .ok());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), data.begin() + 12345));
  Result<int64_t> size = c->HeadObject(b, "dir/obj one", In(30));
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, 200000);
  Result<int64_t> none = c->HeadObject(b, "dir/missing", In(30));
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, -1);
  bool complete = false;
  Result<std::vector<std::string>> keys = c->ListKeys(b, "dir/", 10, &complete, In(30));
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_TRUE(complete);
  EXPECT_EQ(*keys, std::vector<std::string>{"dir/obj one"});
}

TEST(S3ClientTest, MultipartUploadReassembles) {
  auto c = RgwClient();
  const std::string b = NewBucket(*c);
  const std::vector<uint8_t> data = RandomBytes((11 << 20) + 123, 2);
  ASSERT_TRUE(c->PutObjectMultipart(b, "big", data.data(), data.size(), 5 << 20, In(60)).ok());
  Result<std::vector<uint8_t>> back =
      c->GetObject(b, "big", 16 << 20, ReadPriority::kDemand, In(60));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == data);
}

TEST(S3ClientTest, MissingObjectAndBucketAreNotFound) {
  auto c = RgwClient();
  const std::string b = NewBucket(*c);
  std::vector<uint8_t> buf(10);
  Status s = c->GetRange(b, "nothing", 0, 10, buf.data(), ReadPriority::kDemand, In(30));
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("no such object"), std::string::npos) << s.ToString();
  s = c->GetRange("pw-no-such-bucket", "x", 0, 10, buf.data(), ReadPriority::kDemand, In(30));
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("bucket 'pw-no-such-bucket' does not exist"), std::string::npos)
      << s.ToString();
  Result<int64_t> h = c->HeadObject("pw-no-such-bucket", "x", In(30));
  EXPECT_EQ(h.status().code(), Code::kNotFound) << h.status().ToString();
}

TEST(S3ClientTest, WrongSecretIsPermissionDeniedWithoutSecrets) {
  const std::string wrong = "not-the-secret-key-0000000000000000000000";
  auto bad = RgwClient(wrong);
  const std::string b = NewBucket(*RgwClient());
  std::vector<uint8_t> buf(10);
  const Clock::time_point t0 = Clock::now();
  Status s = bad->GetRange(b, "x", 0, 10, buf.data(), ReadPriority::kDemand, In(30));
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10)) << "not retried";
  EXPECT_EQ(s.message().find(wrong), std::string::npos);
  EXPECT_EQ(s.message().find(Rgw().secret_key()), std::string::npos);
  EXPECT_EQ(s.message().find("Signature="), std::string::npos);
  EXPECT_NE(s.message().find("SignatureDoesNotMatch"), std::string::npos) << s.ToString();
}

// A TCP listener on 127.0.0.1 that never accepts: connections complete (the
// kernel answers the handshake) but no request is ever read.
struct SilentListener {
  int fd = -1;
  int port = 0;
  SilentListener() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd, 64), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~SilentListener() { close(fd); }
};

std::shared_ptr<remote::S3Client> ClientFor(const std::string& endpoint) {
  RemoteOptions o;
  o.endpoint = endpoint;
  Result<remote::S3Config> cfg = remote::ResolveS3Config(o, RgwEnv());
  EXPECT_TRUE(cfg.ok()) << cfg.status().ToString();
  Result<std::shared_ptr<remote::HttpEngine>> http = remote::HttpEngine::Create({});
  return std::make_shared<remote::S3Client>(*cfg, *http);
}

TEST(S3ClientTest, SilentEndpointFailsWithinTheDeadline) {
  SilentListener l;
  auto c = ClientFor("http://127.0.0.1:" + std::to_string(l.port));
  std::vector<uint8_t> buf(10);
  const Clock::time_point t0 = Clock::now();
  Status s = c->GetRange("bucket", "x", 0, 10, buf.data(), ReadPriority::kDemand,
                         Clock::now() + std::chrono::milliseconds(1500));
  const auto took = Clock::now() - t0;
  EXPECT_EQ(s.code(), Code::kTimeout) << s.ToString();
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.ToString();
  EXPECT_LT(took, std::chrono::seconds(5));
}

TEST(S3ClientTest, RefusingEndpointIsRetriedUntilTheDeadline) {
  int port;
  {
    SilentListener l;  // a port that was free a moment ago, now closed
    port = l.port;
  }
  auto c = ClientFor("http://127.0.0.1:" + std::to_string(port));
  std::vector<uint8_t> buf(10);
  const Clock::time_point t0 = Clock::now();
  Status s = c->GetRange("bucket", "x", 0, 10, buf.data(), ReadPriority::kDemand,
                         Clock::now() + std::chrono::milliseconds(800));
  EXPECT_EQ(s.code(), Code::kTimeout) << s.ToString();
  EXPECT_NE(s.message().find("attempt(s)"), std::string::npos) << s.ToString();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(4));
}

TEST(S3ClientTest, PresignedUrlReadsWithoutKeys) {
  auto c = RgwClient();
  const std::string b = NewBucket(*c);
  const std::vector<uint8_t> data = RandomBytes(5000, 3);
  ASSERT_TRUE(c->PutObject(b, "p", data.data(), data.size(),
                           remote::HexLower(remote::Sha256(data.data(), data.size())), In(30))
                  .ok());
  remote::SigningInput in;
  in.method = "GET";
  Result<remote::Endpoint> ep = remote::ParseEndpoint(Rgw().endpoint());
  ASSERT_TRUE(ep.ok());
  in.host = ep->host;
  in.path = "/" + b + "/p";
  in.amz_date = remote::AmzDate(std::chrono::system_clock::now());
  in.region = "us-east-1";
  in.service = "s3";
  const std::string q =
      remote::PresignV4Query(in, {Rgw().access_key(), Rgw().secret_key(), ""}, 600);
  remote::HttpRequest r;
  r.url = ep->base + in.path + "?" + q;
  r.headers = {{"Range", "bytes=100-199"}};
  remote::HttpResponse resp = c->http()->Perform(r);
  ASSERT_TRUE(resp.transport_ok()) << resp.curl_error;
  EXPECT_EQ(resp.status, 206);
  ASSERT_EQ(resp.body.size(), 100u);
  EXPECT_TRUE(std::equal(resp.body.begin(), resp.body.end(), data.begin() + 100));
}

}  // namespace
}  // namespace pagewise::testing
