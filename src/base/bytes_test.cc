// base/bytes.h: zero test at every length and offset, the little-endian
// codec's byte order, and the hex forms.
#include "base/bytes.h"

#include <gtest/gtest.h>

#include <vector>

namespace pagewise {
namespace {

TEST(Bytes, IsAllZeroSeesEveryByteAtEveryLengthAndOffset) {
  std::vector<unsigned char> buf(300, 0);
  for (size_t off = 0; off < 9; ++off) {
    for (size_t len = 0; off + len <= 260; len += 7) {
      EXPECT_TRUE(IsAllZero(buf.data() + off, len)) << off << "+" << len;
      for (size_t at = 0; at < len; at += (len > 70 ? 13 : 1)) {
        buf[off + at] = 0x10;
        EXPECT_FALSE(IsAllZero(buf.data() + off, len)) << off << "+" << len << " set " << at;
        buf[off + at] = 0;
      }
    }
  }
  buf[299] = 1;  // just past the range: not looked at
  EXPECT_TRUE(IsAllZero(buf.data(), 299));
}

TEST(Bytes, LittleEndianCodecWritesLowByteFirst) {
  unsigned char b[8];
  StoreLe32(b, 0x11223344u);
  EXPECT_EQ(b[0], 0x44);
  EXPECT_EQ(b[3], 0x11);
  EXPECT_EQ(LoadLe32(b), 0x11223344u);
  StoreLe64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 0x08);
  EXPECT_EQ(b[7], 0x01);
  EXPECT_EQ(LoadLe64(b), 0x0102030405060708ull);
  std::string s;
  AppendLe32(&s, 0xdeadbeefu);
  AppendLe64(&s, 0xffffffff00000001ull);
  ASSERT_EQ(s.size(), 12u);
  EXPECT_EQ(static_cast<unsigned char>(s[0]), 0xef);
  EXPECT_EQ(LoadLe32(s.data()), 0xdeadbeefu);
  EXPECT_EQ(LoadLe64(s.data() + 4), 0xffffffff00000001ull);
}

TEST(Bytes, HexForms) {
  const unsigned char d[] = {0x00, 0x0f, 0xa0, 0xff};
  EXPECT_EQ(HexBytes(d, sizeof(d)), "000fa0ff");
  EXPECT_EQ(HexBytes(d, 0), "");
  EXPECT_EQ(HexAddr(0), "0x0");
  EXPECT_EQ(HexAddr(0x7f1234560000ull), "0x7f1234560000");
  EXPECT_EQ(HexAddr(~0ull), "0xffffffffffffffff");
}

}  // namespace
}  // namespace pagewise
