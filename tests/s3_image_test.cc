// Images through a real S3 server (Ceph RADOS Gateway): push, pull, verify,
// export, inspect and diff round trips byte for byte; what a second push
// uploads; damaged and missing chunks in the bucket and in the cache; and
// the errors for an unknown scheme, a missing bucket, wrong keys and an
// endpoint that does not answer, each within a bounded time and leaving
// nothing in the cache but complete entries.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "image/format.h"
#include "pagewise/remote.h"
#include "remote/crypto.h"
#include "remote/manifest.h"
#include "remote/sigv4.h"
#include "s3_test_support.h"
#include "testing/cli_runner.h"

namespace pagewise::testing {
namespace {

namespace fs = std::filesystem;
constexpr size_t kPages = 1024;
constexpr size_t kLen = kPages * 4096;

// 30% zero pages, the rest random; `seed` picks the content.
std::vector<char> Content(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<char> m(kLen, 0);
  for (size_t p = 0; p < kPages; ++p) {
    if (rng() % 10 < 3) continue;
    for (size_t i = 0; i < 4096; i += 8) {
      const uint64_t w = rng();
      std::memcpy(m.data() + p * 4096 + i, &w, 8);
    }
  }
  return m;
}

// `base` with 10% of its pages rewritten and a few zeroed.
std::vector<char> Changed(const std::vector<char>& base, uint64_t seed) {
  std::vector<char> m = base;
  std::mt19937_64 rng(seed);
  for (size_t k = 0; k < kPages / 10; ++k) {
    const size_t p = rng() % kPages;
    for (size_t i = 0; i < 4096; ++i) m[p * 4096 + i] = static_cast<char>(rng());
  }
  std::memset(m.data() + 7 * 4096, 0, 3 * 4096);
  return m;
}

CliResult Cli(const std::vector<std::string>& args) { return RunCli(PAGEWISE_CLI_PATH, args); }

nlohmann::json Json(const CliResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out, nullptr, false);
}

// Every file under the cache is a complete entry: the SHA-256 of its bytes
// is its name, and no temporary file is left.
void ExpectOnlyCompleteEntries(const std::string& cache) {
  if (!fs::exists(cache + "/v1")) return;
  EXPECT_TRUE(fs::is_empty(cache + "/v1/tmp"));
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(cache + "/v1/c")) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename();
    ASSERT_EQ(name.rfind("s3-", 0), 0u) << name;
    const std::string bytes = ReadWholeFile(e.path());
    EXPECT_EQ("s3-" + remote::HexLower(remote::Sha256(bytes)), name);
    ++n;
  }
  (void)n;
}

class S3ImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = RgwClient();
    bucket_ = NewBucket(*client_);
  }
  std::string Url(const std::string& name) const { return "s3://" + bucket_ + "/" + name; }
  std::vector<std::string> ChunkKeys() const {
    bool complete = false;
    Result<std::vector<std::string>> keys =
        client_->ListKeys(bucket_, remote::kChunkPrefix, 100, &complete, In(30));
    EXPECT_TRUE(keys.ok() && complete);
    return keys.ok() ? *keys : std::vector<std::string>{};
  }

  TempDir dir_;
  CacheDir cache_;
  std::shared_ptr<remote::S3Client> client_;
  std::string bucket_;
};

TEST_F(S3ImageTest, ChainRoundTripsByteForByte) {
  const std::vector<char> a = Content(1), b = Changed(a, 2);
  const std::string base = dir_.File("base.img"), top = dir_.File("top.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  ASSERT_TRUE(WriteFlatImage(top, b.data(), kLen, base, a.data()).ok());
  nlohmann::json push = Json(Cli({"push", top, Url("vm/top"), "--json"}));
  EXPECT_EQ(push["layers"], 2);
  EXPECT_EQ(push["layers_uploaded"], 2);
  EXPECT_TRUE(push["name_updated"].get<bool>());

  CliResult r = Cli({"verify", Url("vm/top")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json inspect = Json(Cli({"inspect", Url("vm/top"), "--json"}));
  ASSERT_EQ(inspect["layers"].size(), 2u);
  EXPECT_EQ(inspect["layers"][0]["path"], Url("vm/top"));

  // export from the bucket == export of the local chain == the content.
  r = Cli({"export", Url("vm/top"), dir_.File("remote.raw")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadWholeFile(dir_.File("remote.raw")) == std::string(b.data(), b.size()));
  r = Cli({"diff", Url("vm/top"), top, "--exit-code"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Cli({"diff", Url("vm/top"), base, "--exit-code"});
  EXPECT_EQ(r.exit_code, 1) << "the layer differs from its base";

  // pull: the base layer file is byte-identical; the top layer is, but for
  // the parent path it now records; both export the same bytes.
  nlohmann::json pull = Json(Cli({"pull", Url("vm/top"), dir_.File("pulled.img"), "--json"}));
  ASSERT_EQ(pull["files"].size(), 2u);
  EXPECT_TRUE(ReadWholeFile(dir_.File("pulled.img.parent-1")) == ReadWholeFile(base));
  r = Cli({"verify", dir_.File("pulled.img")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"export", dir_.File("pulled.img"), dir_.File("pulled.raw")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadWholeFile(dir_.File("pulled.raw")) == std::string(b.data(), b.size()));
  // The pulled chain is the pushed one (same identities).
  Result<std::unique_ptr<Image>> pulled = Image::Open(dir_.File("pulled.img"));
  Result<std::unique_ptr<Image>> local = Image::Open(top);
  ASSERT_TRUE(pulled.ok() && local.ok());
  EXPECT_EQ((*pulled)->layers()[0].stats.pages, (*local)->layers()[0].stats.pages);
  // A base image pulls back byte for byte.
  Json(Cli({"push", base, Url("vm/base")}));
  Json(Cli({"pull", Url("vm/base"), dir_.File("base2.img"), "--json"}));
  EXPECT_TRUE(ReadWholeFile(dir_.File("base2.img")) == ReadWholeFile(base));
  ExpectOnlyCompleteEntries(cache_.path());
}

TEST_F(S3ImageTest, SecondPushUploadsNothingAndLayersOnlyTheirChunks) {
  const std::vector<char> a = Content(3), b = Changed(a, 4);
  const std::string base = dir_.File("base.img"), top = dir_.File("top.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  nlohmann::json first = Json(Cli({"push", base, Url("base"), "--json"}));
  EXPECT_GT(first["chunk_bytes_uploaded"].get<uint64_t>(), 0u);
  const size_t chunks_after_first = ChunkKeys().size();
  EXPECT_EQ(first["chunks_uploaded"].get<size_t>(), chunks_after_first);

  nlohmann::json again = Json(Cli({"push", base, Url("base"), "--json"}));
  EXPECT_EQ(again["bytes_uploaded"], 0) << again.dump();
  EXPECT_FALSE(again["name_updated"].get<bool>());

  // The same content written again is another layer (a new identity) whose
  // chunks are all in the bucket already: only its manifests go up.
  ASSERT_TRUE(WriteFlatImage(dir_.File("copy.img"), a.data(), kLen).ok());
  nlohmann::json copy = Json(Cli({"push", dir_.File("copy.img"), Url("copy"), "--json"}));
  EXPECT_EQ(copy["chunks_uploaded"], 0) << copy.dump();
  EXPECT_EQ(copy["chunk_bytes_uploaded"], 0);
  EXPECT_EQ(ChunkKeys().size(), chunks_after_first);

  // A layer on top: the base is skipped whole, only the layer's chunks go.
  ASSERT_TRUE(WriteFlatImage(top, b.data(), kLen, base, a.data()).ok());
  nlohmann::json layer = Json(Cli({"push", top, Url("top"), "--json"}));
  EXPECT_EQ(layer["layers_uploaded"], 1);
  Result<std::unique_ptr<Image>> t = Image::Open(top);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(layer["chunk_bytes_uploaded"].get<uint64_t>(),
            (*t)->layers()[0].stats.compressed_bytes);
  EXPECT_LE(layer["bytes_uploaded"].get<double>(), 0.2 * kLen) << layer.dump();
}

TEST_F(S3ImageTest, LargeManifestGoesUpInParts) {
  const std::vector<char> a = Content(5);
  const std::string base = dir_.File("base.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  PushOptions o;
  o.multipart_bytes = 1000;  // every manifest is "large"
  Result<PushStats> s = PushImage(base, Url("parts"), o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_GT(s->manifest_bytes_uploaded, 1000u);
  Result<PullStats> p = PullImage(Url("parts"), dir_.File("parts.img"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(ReadWholeFile(dir_.File("parts.img")) == ReadWholeFile(base));
}

TEST_F(S3ImageTest, DamagedOrMissingChunkInTheBucketIsNamedNeverUsed) {
  const std::vector<char> a = Content(6);
  const std::string base = dir_.File("base.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  Json(Cli({"push", base, Url("img")}));
  const std::vector<std::string> keys = ChunkKeys();
  ASSERT_GE(keys.size(), 2u);
  // Replace one chunk object with other bytes (same length), delete another.
  Result<std::vector<uint8_t>> obj =
      client_->GetObject(bucket_, keys[0], 1 << 24, ReadPriority::kDemand, In(30));
  ASSERT_TRUE(obj.ok());
  std::vector<uint8_t> bad = *obj;
  bad[bad.size() / 2] ^= 0x5a;
  ASSERT_TRUE(client_
                  ->PutObject(bucket_, keys[0], bad.data(), bad.size(),
                              remote::HexLower(remote::Sha256(bad.data(), bad.size())), In(30))
                  .ok());
  ASSERT_TRUE(client_->DeleteObject(bucket_, keys[1], In(30)).ok());

  CliResult r = Cli({"verify", Url("img")});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("chunk"), std::string::npos) << r.err;
  EXPECT_TRUE(r.err.find(keys[0]) != std::string::npos || r.err.find(keys[1]) != std::string::npos)
      << r.err;
  r = Cli({"export", Url("img"), dir_.File("out.raw")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir_.File("out.raw"))) << "a failed export leaves nothing";
  Result<std::unique_ptr<Image>> img = Image::Open(Url("img"));
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  std::vector<char> buf(kLen);
  Status s = (*img)->ReadFlat(0, buf.data(), kLen);
  EXPECT_TRUE(s.code() == Code::kCorruption || s.code() == Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("pagewise/chunks/"), std::string::npos) << s.ToString();
  // The image's chunk store fetches the rest of the image on its own
  // threads, and a fetch in flight has its temporary file: closing the image
  // joins them, after which no temporary file may be left.
  img->reset();
  ExpectOnlyCompleteEntries(cache_.path());
  // Neither bad object made it into the cache.
  for (int i = 0; i < 2; ++i) {
    const std::string entry = "s3-" + keys[i].substr(sizeof(remote::kChunkPrefix) - 1);
    for (const auto& e : fs::recursive_directory_iterator(cache_.path() + "/v1/c")) {
      EXPECT_NE(e.path().filename(), entry);
    }
  }
}

TEST_F(S3ImageTest, DamagedCacheEntryIsFetchedAgain) {
  const std::vector<char> a = Content(7);
  const std::string base = dir_.File("base.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  Json(Cli({"push", base, Url("img")}));
  ASSERT_EQ(Cli({"export", Url("img"), dir_.File("one.raw")}).exit_code, 0);
  // Damage every cache entry (a torn write, a disk error).
  size_t damaged = 0;
  for (const auto& e : fs::recursive_directory_iterator(cache_.path() + "/v1/c")) {
    if (!e.is_regular_file()) continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('\x42');
    f.put('\x24');
    ++damaged;
  }
  ASSERT_GT(damaged, 0u);
  CliResult r = Cli({"export", Url("img"), dir_.File("two.raw")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadWholeFile(dir_.File("two.raw")) == std::string(a.data(), a.size()));
  ExpectOnlyCompleteEntries(cache_.path());  // the damaged entries were replaced
}

TEST_F(S3ImageTest, BadInputFailsClearlyWithinBoundedTime) {
  const std::vector<char> a = Content(8);
  const std::string base = dir_.File("base.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  Json(Cli({"push", base, Url("img")}));

  CliResult r = Cli({"inspect", "ftp://host/img"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("unknown URL scheme 'ftp'"), std::string::npos) << r.err;

  r = Cli({"inspect", "s3://pw-no-such-bucket-here/img"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bucket 'pw-no-such-bucket-here' does not exist"), std::string::npos)
      << r.err;
  r = Cli({"push", base, "s3://pw-no-such-bucket-here/img"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = Cli({"inspect", Url("no-such-image")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no such object"), std::string::npos) << r.err;

  // Wrong keys: refused at once, and no secret in what is printed.
  const std::string wrong = "wrong-secret-for-pagewise-tests-0000000000";
  setenv("AWS_SECRET_ACCESS_KEY", wrong.c_str(), 1);
  r = Cli({"export", Url("img"), dir_.File("x.raw")});
  setenv("AWS_SECRET_ACCESS_KEY", Rgw().secret_key().c_str(), 1);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("permission_denied"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(wrong), std::string::npos);
  EXPECT_EQ(r.err.find(Rgw().secret_key()), std::string::npos);

  // An endpoint that does not answer: an error after the timeout, not a hang.
  setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "1500", 1);
  setenv("AWS_ENDPOINT_URL", ("http://127.0.0.1:" + std::to_string(ClosedPort())).c_str(), 1);
  const auto t2 = std::chrono::steady_clock::now();
  r = Cli({"export", Url("img"), dir_.File("y.raw")});
  const auto took = std::chrono::steady_clock::now() - t2;
  setenv("AWS_ENDPOINT_URL", Rgw().endpoint().c_str(), 1);
  setenv("PAGEWISE_REMOTE_TIMEOUT_MS", "20000", 1);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_FALSE(fs::exists(dir_.File("x.raw")));
  EXPECT_FALSE(fs::exists(dir_.File("y.raw")));
  ExpectOnlyCompleteEntries(cache_.path());
}

TEST_F(S3ImageTest, ImageFileReadOverHttpRangesFromAPresignedUrl) {
  const std::vector<char> a = Content(9);
  const std::string base = dir_.File("base.img");
  ASSERT_TRUE(WriteFlatImage(base, a.data(), kLen).ok());
  const std::string file = ReadWholeFile(base);
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  ASSERT_TRUE(client_
                  ->PutObject(bucket_, "files/base.img", bytes, file.size(),
                              remote::HexLower(remote::Sha256(bytes, file.size())), In(30))
                  .ok());
  remote::SigningInput in;
  in.method = "GET";
  Result<remote::Endpoint> ep = remote::ParseEndpoint(Rgw().endpoint());
  ASSERT_TRUE(ep.ok());
  in.host = ep->host;
  in.path = "/" + bucket_ + "/files/base.img";
  in.amz_date = remote::AmzDate(std::chrono::system_clock::now());
  in.region = "us-east-1";
  in.service = "s3";
  const std::string url =
      ep->base + in.path + "?" +
      remote::PresignV4Query(in, {Rgw().access_key(), Rgw().secret_key(), ""}, 3600);
  CliResult r = Cli({"export", url, dir_.File("http.raw")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadWholeFile(dir_.File("http.raw")) == std::string(a.data(), a.size()));
  r = Cli({"verify", url});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace pagewise::testing
