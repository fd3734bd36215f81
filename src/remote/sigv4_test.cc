// SigV4 against the worked examples AWS publishes (S3 header-based
// authentication: GET object with a range, PUT object, list objects, GET
// bucket lifecycle; a presigned GET; the SigV4 test suite's get-vanilla).
#include "remote/sigv4.h"

#include <gtest/gtest.h>

#include "remote/crypto.h"

namespace pagewise::remote {
namespace {

// The S3 documentation's example account.
Credentials S3Example() {
  return {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"};
}

SigningInput S3Input(const std::string& method, const std::string& path) {
  SigningInput in;
  in.method = method;
  in.host = "examplebucket.s3.amazonaws.com";
  in.path = path;
  in.amz_date = "20130524T000000Z";
  in.region = "us-east-1";
  in.service = "s3";
  in.payload_hash = std::string(kEmptySha256Hex);
  in.headers = {{"x-amz-content-sha256", in.payload_hash}};
  return in;
}

TEST(SigV4Test, S3GetObjectWithRange) {
  SigningInput in = S3Input("GET", "/test.txt");
  in.headers.emplace_back("Range", "bytes=0-9");
  const Signed s = SignV4(in, S3Example());
  EXPECT_EQ(
      s.canonical_request,
      "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  bool found = false;
  for (const auto& [k, v] : s.headers) {
    if (k != "Authorization") continue;
    found = true;
    EXPECT_EQ(v,
              "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
              "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
              "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  }
  EXPECT_TRUE(found);
}

TEST(SigV4Test, S3PutObject) {
  const std::string body = "Welcome to Amazon S3.";
  const std::string hash = HexLower(Sha256(body));
  EXPECT_EQ(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  SigningInput in = S3Input("PUT", "/" + UriEncode("test$file.text", true));
  in.payload_hash = hash;
  in.headers = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                {"x-amz-content-sha256", hash}};
  const Signed s = SignV4(in, S3Example());
  EXPECT_EQ(s.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(SigV4Test, S3ListObjectsQueryIsSortedAndEncoded) {
  SigningInput in = S3Input("GET", "/");
  in.query = {{"prefix", "J"}, {"max-keys", "2"}};
  EXPECT_EQ(SignV4(in, S3Example()).signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4Test, S3GetBucketLifecycleEmptyQueryValue) {
  SigningInput in = S3Input("GET", "/");
  in.query = {{"lifecycle", ""}};
  EXPECT_EQ(SignV4(in, S3Example()).signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST(SigV4Test, S3PresignedGet) {
  SigningInput in = S3Input("GET", "/test.txt");
  const std::string q = PresignV4Query(in, S3Example(), 86400);
  EXPECT_EQ(q,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%"
            "2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&"
            "X-Amz-SignedHeaders=host&X-Amz-Signature="
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
}

TEST(SigV4Test, TestSuiteGetVanilla) {
  SigningInput in;
  in.method = "GET";
  in.host = "example.amazonaws.com";
  in.path = "/";
  in.amz_date = "20150830T123600Z";
  in.region = "us-east-1";
  in.service = "service";
  in.payload_hash = std::string(kEmptySha256Hex);
  const Signed s = SignV4(in, {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"});
  EXPECT_EQ(s.signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4Test, SessionTokenIsSentAndSigned) {
  SigningInput in = S3Input("GET", "/test.txt");
  Credentials c = S3Example();
  c.session_token = "token/with+chars";
  const Signed s = SignV4(in, c);
  EXPECT_NE(s.canonical_request.find("x-amz-security-token:token/with+chars\n"), std::string::npos);
  EXPECT_NE(s.signature, SignV4(in, S3Example()).signature);
}

TEST(SigV4Test, UriEncode) {
  EXPECT_EQ(UriEncode("a b+c/d~e", false), "a%20b%2Bc/d~e");
  EXPECT_EQ(UriEncode("a/b", true), "a%2Fb");
  EXPECT_EQ(UriEncode("\xc3\xa9", true), "%C3%A9");
}

TEST(SigV4Test, AmzDate) {
  EXPECT_EQ(AmzDate(std::chrono::system_clock::from_time_t(1369353600)), "20130524T000000Z");
}

}  // namespace
}  // namespace pagewise::remote
