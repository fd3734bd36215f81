// Tests of WriteScanBaseline (pagewise/raw_scan.h) against the real kernel.
#include "sys/scan_baseline.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace pagewise {
namespace {

TEST(WriteScanBaseline, ReportsExactlyTheWrittenPagesOnce) {
  const size_t page = PageSize();
  testing::Mapping m(64 * page);
  for (size_t i = 0; i < 32; ++i) m.page(i)[0] = 1;  // populate half; the rest stays empty
  Result<std::unique_ptr<WriteScanBaseline>> s = WriteScanBaseline::Open(nullptr, 4);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE((*s)->Arm(m.data(), m.size()).ok());

  Result<uint64_t> none = (*s)->ScanWritten(m.data(), m.size(), nullptr);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, 0u);

  // Populated and never-touched pages, isolated so that they do not merge;
  // more regions than the batch of 4, so the scan must resume at walk_end.
  const size_t written[] = {1, 3, 9, 20, 33, 40, 63};
  for (size_t i : written) m.page(i)[7] = 2;
  std::vector<PageRange> out;
  Result<uint64_t> n = (*s)->ScanWritten(m.data(), m.size(), &out);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, std::size(written));
  ASSERT_EQ(out.size(), std::size(written));
  for (size_t k = 0; k < out.size(); ++k) {
    EXPECT_EQ(out[k].start, m.addr() + written[k] * page);
    EXPECT_EQ(out[k].end, m.addr() + (written[k] + 1) * page);
  }
  // Re-armed by the scan: nothing until the next write.
  Result<uint64_t> again = (*s)->ScanWritten(m.data(), m.size(), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
}

TEST(WriteScanBaseline, RejectsUnalignedArm) {
  testing::Mapping m(4 * PageSize());
  Result<std::unique_ptr<WriteScanBaseline>> s = WriteScanBaseline::Open();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->Arm(m.data() + 1, PageSize()).code(), Code::kInvalidArgument);
  EXPECT_EQ((*s)->Arm(m.data(), 0).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace pagewise
