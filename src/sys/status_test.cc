// Status / ErrnoStatus behaviour.
#include "pagewise/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace pagewise {
namespace {

TEST(StatusTest, ErrnoMapsToDistinctCodes) {
  EXPECT_EQ(ErrnoStatus(ENOSYS, "x").code(), Code::kNotSupported);
  EXPECT_EQ(ErrnoStatus(ENOTTY, "x").code(), Code::kNotSupported);
  EXPECT_EQ(ErrnoStatus(EIO, "x").code(), Code::kIoError);
  EXPECT_EQ(ErrnoStatus(ENOSPC, "x").code(), Code::kNoSpace);
  EXPECT_EQ(ErrnoStatus(EAGAIN, "x").code(), Code::kRetry);
  EXPECT_EQ(ErrnoStatus(EEXIST, "x").code(), Code::kAlreadyExists);
  EXPECT_EQ(ErrnoStatus(ESRCH, "x").code(), Code::kPeerGone);
  EXPECT_EQ(ErrnoStatus(ENOMEM, "x").code(), Code::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(ETIMEDOUT, "x").code(), Code::kTimeout);
}

TEST(StatusTest, TimeoutIsItsOwnCodeNotRetry) {
  const Status t = Status::Timeout("waited 5 ms");
  EXPECT_EQ(t.code(), Code::kTimeout);
  EXPECT_NE(t.code(), Code::kRetry);
  EXPECT_EQ(CodeName(Code::kTimeout), "timeout");
  EXPECT_EQ(t.ToString(), "timeout: waited 5 ms");
}

TEST(StatusTest, MessageNamesOperationErrnoAndHint) {
  Status s = ErrnoStatus(ENOSPC, "write image foo.pwimg", "free some disk space");
  EXPECT_EQ(s.err(), ENOSPC);
  std::string text = s.ToString();
  EXPECT_NE(text.find("no_space"), std::string::npos) << text;
  EXPECT_NE(text.find("write image foo.pwimg failed"), std::string::npos) << text;
  EXPECT_NE(text.find("free some disk space"), std::string::npos) << text;
  EXPECT_NE(text.find("errno 28"), std::string::npos) << text;
  EXPECT_EQ(s.WithContext("snapshot").message().rfind("snapshot: ", 0), 0u);
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  PW_ASSIGN_OR_RETURN(*out, Half(x));
  return Status::Ok();
}

TEST(StatusTest, ResultCarriesValueOrStatus) {
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  Status s = UseHalf(7, &out);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_EQ(out, 4);
}

}  // namespace
}  // namespace pagewise
