// Endpoint, region and credentials resolution: options over environment
// over profile files; profiles; refusals (half a key pair, plain http off
// this host, an unknown named profile); URL parsing.
#include "remote/aws_config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "remote/url.h"
#include "testing/test_util.h"

namespace pagewise::remote {
namespace {

EnvLookup Vars(std::map<std::string, std::string> m) {
  return [m](const std::string& k, std::string* v) {
    auto it = m.find(k);
    if (it == m.end()) return false;
    *v = it->second;
    return true;
  };
}

class AwsConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.File("credentials")) << "[default]\naws_access_key_id = FILEKEY\n"
                                               "aws_secret_access_key=filesecret\n"
                                               "# comment\n[other]\naws_access_key_id=OTHER\n"
                                               "aws_secret_access_key = othersecret\n"
                                               "aws_session_token = tok\n";
    std::ofstream(dir_.File("config")) << "[default]\nregion = eu-west-1\n"
                                          "[profile other]\nregion=ap-south-1\n"
                                          "endpoint_url = http://127.0.0.1:9000\n"
                                          "[profile onlyconf]\naws_access_key_id = CONF\n"
                                          "aws_secret_access_key = confsecret\n";
  }
  std::map<std::string, std::string> Files() {
    return {{"AWS_SHARED_CREDENTIALS_FILE", dir_.File("credentials")},
            {"AWS_CONFIG_FILE", dir_.File("config")}};
  }
  testing::TempDir dir_;
};

TEST_F(AwsConfigTest, DefaultProfileFromFiles) {
  Result<S3Config> c = ResolveS3Config({}, Vars(Files()));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->credentials.access_key_id, "FILEKEY");
  EXPECT_EQ(c->credentials.secret_access_key, "filesecret");
  EXPECT_EQ(c->region, "eu-west-1");
  EXPECT_EQ(c->endpoint.base, "https://s3.eu-west-1.amazonaws.com");
  EXPECT_FALSE(c->path_style);
  EXPECT_EQ(c->credentials_from.find("filesecret"), std::string::npos);
}

TEST_F(AwsConfigTest, NamedProfileWithEndpointAndToken) {
  auto vars = Files();
  vars["AWS_PROFILE"] = "other";
  Result<S3Config> c = ResolveS3Config({}, Vars(vars));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->credentials.access_key_id, "OTHER");
  EXPECT_EQ(c->credentials.session_token, "tok");
  EXPECT_EQ(c->region, "ap-south-1");
  EXPECT_EQ(c->endpoint.base, "http://127.0.0.1:9000");
  EXPECT_TRUE(c->endpoint.local);
  EXPECT_TRUE(c->path_style);
}

TEST_F(AwsConfigTest, KeysFromConfigFileWhenNotInCredentials) {
  RemoteOptions o;
  o.profile = "onlyconf";
  Result<S3Config> c = ResolveS3Config(o, Vars(Files()));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->credentials.access_key_id, "CONF");
}

TEST_F(AwsConfigTest, EnvironmentBeatsFilesAndOptionsBeatEnvironment) {
  auto vars = Files();
  vars["AWS_ACCESS_KEY_ID"] = "ENVKEY";
  vars["AWS_SECRET_ACCESS_KEY"] = "envsecret";
  vars["AWS_SESSION_TOKEN"] = "envtok";
  vars["AWS_REGION"] = "us-west-2";
  vars["AWS_ENDPOINT_URL"] = "https://objects.example.com/";
  RemoteOptions o;
  o.region = "sa-east-1";
  Result<S3Config> c = ResolveS3Config(o, Vars(vars));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->credentials.access_key_id, "ENVKEY");
  EXPECT_EQ(c->credentials.session_token, "envtok");
  EXPECT_EQ(c->region, "sa-east-1");
  EXPECT_EQ(c->endpoint.base, "https://objects.example.com");
  EXPECT_TRUE(c->path_style);
  o.endpoint = "http://localhost:7480";
  c = ResolveS3Config(o, Vars(vars));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->endpoint.base, "http://localhost:7480");
}

TEST_F(AwsConfigTest, Refusals) {
  auto vars = Files();
  vars["AWS_ACCESS_KEY_ID"] = "ONLYID";
  Result<S3Config> c = ResolveS3Config({}, Vars(vars));
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  RemoteOptions o;
  o.endpoint = "http://objects.example.com";
  c = ResolveS3Config(o, Vars(Files()));
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find("unencrypted"), std::string::npos);
  o.allow_http = true;
  EXPECT_TRUE(ResolveS3Config(o, Vars(Files())).ok());
  o = {};
  o.profile = "nosuch";
  c = ResolveS3Config(o, Vars(Files()));
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  o.profile = "";
  o.endpoint = "ftp://x";
  EXPECT_EQ(ResolveS3Config(o, Vars(Files())).status().code(), Code::kInvalidArgument);
}

TEST_F(AwsConfigTest, NoKeysAnywhereIsAnonymous) {
  Result<S3Config> c = ResolveS3Config({}, Vars({{"HOME", dir_.File("nohome")}}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->credentials.empty());
  EXPECT_EQ(c->region, "us-east-1");
}

TEST(UrlTest, ParsesAndRefuses) {
  Result<ObjectUrl> u = ParseObjectUrl("s3://my-bucket/a/b.img");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->bucket, "my-bucket");
  EXPECT_EQ(u->key, "a/b.img");
  u = ParseObjectUrl("https://h.example:8443/d/top.img?X-Amz-Signature=abc");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->origin, "https://h.example:8443");
  EXPECT_EQ(u->path, "/d/top.img");
  EXPECT_EQ(u->query, "X-Amz-Signature=abc");
  EXPECT_EQ(ResolveRelativeUrl(*u, "base.img"), "https://h.example:8443/d/base.img");
  EXPECT_EQ(ParseObjectUrl("ftp://h/x").status().code(), Code::kInvalidArgument);
  EXPECT_NE(ParseObjectUrl("ftp://h/x").status().message().find("unknown URL scheme 'ftp'"),
            std::string::npos);
  EXPECT_FALSE(ParseObjectUrl("s3://Bad_Bucket/x").ok());
  EXPECT_FALSE(ParseObjectUrl("s3://bucket").ok());
  EXPECT_FALSE(ParseObjectUrl("s3://bucket/dir/").ok());
  EXPECT_TRUE(IsUrl("s3://b/k"));
  EXPECT_FALSE(IsUrl("/tmp/a://b"));
  EXPECT_FALSE(IsUrl("relative/path.img"));
}

}  // namespace
}  // namespace pagewise::remote
