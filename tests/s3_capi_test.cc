// The C API for remote images (pagewise_push(3)) against a real S3 server:
// push and pull round-trip byte for byte (a second push uploads no chunk),
// an s3:// image opens and verifies with explicit options, a lazy restore
// from an s3:// source gets exact pages, and bad input fails with the
// documented errno and a message that names the cause and no secret.
// Only C functions are under test; C++ sets up the server and the images.
#include <sys/mman.h>

#include <cstring>
#include <filesystem>

#include "pagewise/pagewise.h"
#include "restore/restore_testing.h"
#include "s3_test_support.h"

namespace pagewise::testing {
namespace {

class S3CapiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = RgwClient();
    bucket_ = NewBucket(*client_);
    endpoint_ = Rgw().endpoint();
    std::memset(&opt_, 0, sizeof(opt_));
    opt_.endpoint = endpoint_.c_str();
    opt_.cache_dir = cache_.path().c_str();
    opt_.connections = 4;
  }
  std::string Url(const std::string& name) const { return "s3://" + bucket_ + "/" + name; }
  std::string Image(const PatternBuffer& buf, const std::string& name) {
    const std::string path = dir_.File(name);
    EXPECT_TRUE(WriteFlatImage(path, buf.data(), buf.size()).ok());
    return path;
  }
  std::string Errmsg() const { return pagewise_errmsg(); }

  TempDir dir_;
  CacheDir cache_;  // also PAGEWISE_CACHE_DIR, for the calls without options
  std::shared_ptr<remote::S3Client> client_;
  std::string bucket_, endpoint_;
  pagewise_remote_options opt_;
};

TEST_F(S3CapiTest, PushPullRoundTripAndASecondPushUploadsNoChunk) {
  PatternBuffer buf(96, 81);
  const std::string path = Image(buf, "a.img");
  pagewise_push_stats ps;
  ASSERT_EQ(pagewise_push(path.c_str(), Url("a").c_str(), &opt_, &ps), 0) << Errmsg();
  EXPECT_EQ(ps.layers, 1u);
  EXPECT_EQ(ps.layers_uploaded, 1u);
  EXPECT_GT(ps.chunks, 0u);
  EXPECT_EQ(ps.chunks_uploaded, ps.chunks);
  EXPECT_GT(ps.chunk_bytes_uploaded, 0u);
  EXPECT_EQ(ps.name_updated, 1);
  const uint64_t chunks = ps.chunks;
  ASSERT_EQ(pagewise_push(path.c_str(), Url("a").c_str(), &opt_, &ps), 0) << Errmsg();
  EXPECT_EQ(ps.layers_uploaded, 0u);
  EXPECT_EQ(ps.chunks_uploaded, 0u);
  EXPECT_EQ(ps.chunk_bytes_uploaded, 0u);
  EXPECT_EQ(ps.name_updated, 0);

  const std::string pulled = dir_.File("pulled.img");
  pagewise_pull_stats pl;
  ASSERT_EQ(pagewise_pull(Url("a").c_str(), pulled.c_str(), &opt_, &pl), 0) << Errmsg();
  EXPECT_EQ(pl.files, 1u);
  EXPECT_EQ(pl.chunks_fetched + pl.chunks_cached + pl.chunks_from_peer, chunks);
  EXPECT_EQ(pl.bytes, std::filesystem::file_size(path));
  EXPECT_TRUE(ReadWholeFile(pulled) == ReadWholeFile(path));
  // NULL options and stats: the defaults (the server's environment).
  ASSERT_EQ(pagewise_pull(Url("a").c_str(), pulled.c_str(), nullptr, nullptr), 0) << Errmsg();
  EXPECT_TRUE(ReadWholeFile(pulled) == ReadWholeFile(path));
}

TEST_F(S3CapiTest, RemoteImageReadsAndVerifies) {
  PatternBuffer buf(64, 82);
  const std::string path = Image(buf, "b.img");
  ASSERT_EQ(pagewise_push(path.c_str(), Url("b").c_str(), &opt_, nullptr), 0) << Errmsg();
  pagewise_image* img = nullptr;
  ASSERT_EQ(pagewise_image_open_remote(Url("b").c_str(), &opt_, &img), 0) << Errmsg();
  EXPECT_EQ(pagewise_image_region_count(img), 1u);
  EXPECT_EQ(pagewise_image_flat_size(img), buf.size());
  std::vector<char> got(buf.size());
  ASSERT_EQ(pagewise_image_read_flat(img, 0, got.data(), got.size()), 0) << Errmsg();
  EXPECT_EQ(std::memcmp(got.data(), buf.data(), buf.size()), 0);
  EXPECT_EQ(pagewise_image_verify(img), 0) << Errmsg();
  pagewise_image_close(img);
}

TEST_F(S3CapiTest, LazyRestoreFromARemoteSourceIsExact) {
  PatternBuffer buf(256, 83);
  const std::string path = Image(buf, "c.img");
  ASSERT_EQ(pagewise_push(path.c_str(), Url("c").c_str(), &opt_, nullptr), 0) << Errmsg();
  pagewise_source* src = nullptr;
  ASSERT_EQ(pagewise_source_open_remote(Url("c").c_str(), &opt_, &src), 0) << Errmsg();
  EXPECT_EQ(pagewise_source_size(src), buf.size());
  pagewise_region r;
  std::memset(&r, 0, sizeof(r));
  r.length = buf.size();
  pagewise_lazy_restore* lr = nullptr;
  ASSERT_EQ(pagewise_lazy_restore_start(src, &r, 1, nullptr, &lr), 0) << Errmsg();
  pagewise_source_release(src);  // the restore keeps its own reference
  const char* mem = static_cast<const char*>(pagewise_lazy_restore_data(lr, 0));
  ASSERT_NE(mem, nullptr);
  size_t bad = 0;
  for (size_t i = buf.pages(); i-- > 0;) bad += !buf.Matches(mem + i * Ps(), i);
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(pagewise_lazy_restore_wait(lr, 120'000'000'000), 0) << Errmsg();
  pagewise_restore_stats st;
  ASSERT_EQ(pagewise_lazy_restore_stats(lr, &st), 0);
  EXPECT_EQ(st.pages_total, buf.pages());
  EXPECT_GE(st.demand_faults, 1u);
  pagewise_lazy_restore_destroy(lr);
}

TEST_F(S3CapiTest, BadInputFailsWithTheDocumentedErrno) {
  PatternBuffer buf(16, 84);
  const std::string path = Image(buf, "d.img");
  pagewise_image* img = nullptr;
  EXPECT_EQ(pagewise_image_open_remote("ftp://host/img", &opt_, &img), -EINVAL);
  EXPECT_NE(Errmsg().find("unknown URL scheme 'ftp'"), std::string::npos) << Errmsg();
  EXPECT_EQ(img, nullptr);
  EXPECT_EQ(pagewise_push(path.c_str(), "s3://pw-no-such-bucket-here/img", &opt_, nullptr),
            -ENOENT);
  EXPECT_NE(Errmsg().find("does not exist"), std::string::npos) << Errmsg();
  EXPECT_EQ(pagewise_image_open_remote(Url("no-such-image").c_str(), &opt_, &img), -ENOENT);
  EXPECT_EQ(pagewise_push(nullptr, Url("x").c_str(), &opt_, nullptr), -EINVAL);

  pagewise_remote_options bad = opt_;
  bad.connections = 65;
  EXPECT_EQ(pagewise_push(path.c_str(), Url("x").c_str(), &bad, nullptr), -EINVAL);
  EXPECT_NE(Errmsg().find("connections"), std::string::npos) << Errmsg();
  bad = opt_;
  bad.timeout_ns = -1;
  EXPECT_EQ(pagewise_pull(Url("x").c_str(), dir_.File("x.img").c_str(), &bad, nullptr), -EINVAL);
  EXPECT_NE(Errmsg().find("timeout_ns"), std::string::npos) << Errmsg();

  // Wrong keys: -EPERM, and neither secret in the message.
  const std::string wrong = "wrong-secret-for-pagewise-capi-00000000000";
  setenv("AWS_SECRET_ACCESS_KEY", wrong.c_str(), 1);
  const int rc = pagewise_push(path.c_str(), Url("x").c_str(), &opt_, nullptr);
  const std::string msg = Errmsg();
  setenv("AWS_SECRET_ACCESS_KEY", Rgw().secret_key().c_str(), 1);
  EXPECT_EQ(rc, -EPERM) << msg;
  EXPECT_EQ(msg.find(wrong), std::string::npos);
  EXPECT_EQ(msg.find(Rgw().secret_key()), std::string::npos);

  // An endpoint that refuses connections: -ETIMEDOUT once the object's
  // timeout has passed (retried until then), not a hang.
  const std::string closed = "http://127.0.0.1:" + std::to_string(ClosedPort());
  pagewise_remote_options dead = opt_;
  dead.endpoint = closed.c_str();
  dead.timeout_ns = 1'500'000'000;
  EXPECT_EQ(pagewise_image_open_remote(Url("d").c_str(), &dead, &img), -ETIMEDOUT) << Errmsg();
  EXPECT_NE(Errmsg().find("timed out"), std::string::npos) << Errmsg();
  EXPECT_FALSE(std::filesystem::exists(dir_.File("x.img")));
}

}  // namespace
}  // namespace pagewise::testing
