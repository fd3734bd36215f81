// Kernel-facing tests of sys::PagemapScanner: walk_end resumption, page
// budgets, and PM_SCAN_WP_MATCHING's get-and-re-arm on a WP_ASYNC range.
#include "sys/pagemap.h"

#include <gtest/gtest.h>
#include <linux/userfaultfd.h>

#include <cerrno>
#include <set>

#include "pagewise/probe.h"
#include "sys/uapi.h"
#include "sys/userfaultfd.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::sys {
namespace {

using ::pagewise::testing::Mapping;

const size_t kPage = PageSize();

// Registers `m` for async write-protect tracking and arms every page.
Userfaultfd ArmAsync(const Mapping& m) {
  Userfaultfd::Options o;
  o.required_features =
      UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
  Result<Userfaultfd> u = Userfaultfd::Open(o);
  EXPECT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_TRUE(u->Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_WP).ok());
  EXPECT_TRUE(u->WriteProtect(m.addr(), m.size(), true).ok());
  return std::move(u).value();
}

PagemapScanArgs WrittenArgs(const Mapping& m, bool rearm) {
  PagemapScanArgs a;
  a.start = m.addr();
  a.end = m.addr() + m.size();
  a.flags = rearm ? (kScanWpMatching | kScanCheckWpAsync) : 0;
  a.category_mask = page_is::kWritten;
  a.return_mask = page_is::kWritten;
  return a;
}

std::set<size_t> PagesOf(const std::vector<PageRegion>& regions, const Mapping& m) {
  std::set<size_t> pages;
  for (const PageRegion& r : regions) {
    for (uint64_t a = r.start; a < r.end; a += kPage) pages.insert((a - m.addr()) / kPage);
  }
  return pages;
}

TEST(PagemapTest, ScanAllResumesAtWalkEndWithTinyVector) {
  ASSERT_TRUE(Features().pagemap_scan) << Features().pagemap_scan_reason;
  Mapping m(64 * kPage);
  Userfaultfd u = ArmAsync(m);
  std::set<size_t> want;
  for (size_t i = 0; i < 64; i += 3) {  // isolated pages: one region each
    m.page(i)[0] = 1;
    want.insert(i);
  }
  Result<PagemapScanner> s = PagemapScanner::Open();
  ASSERT_TRUE(s.ok());
  std::vector<PageRegion> out;
  uint64_t walk_end = 0;
  // vec_len 1: the kernel stops after every region; ScanAll must resume.
  ASSERT_TRUE(s->ScanAll(WrittenArgs(m, false), &out, &walk_end, 1).ok());
  EXPECT_EQ(walk_end, m.addr() + m.size());
  EXPECT_EQ(PagesOf(out, m), want);
  EXPECT_EQ(out.size(), want.size());
}

TEST(PagemapTest, AdjacentRegionsMergeAcrossCalls) {
  Mapping m(16 * kPage);
  Userfaultfd u = ArmAsync(m);
  for (size_t i = 4; i < 12; ++i) m.page(i)[0] = 1;
  Result<PagemapScanner> s = PagemapScanner::Open();
  ASSERT_TRUE(s.ok());
  PagemapScanArgs a = WrittenArgs(m, false);
  a.max_pages = 0;
  std::vector<PageRegion> out;
  ASSERT_TRUE(s->ScanAll(a, &out, nullptr, 1).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].start, m.addr() + 4 * kPage);
  EXPECT_EQ(out[0].end, m.addr() + 12 * kPage);
}

TEST(PagemapTest, MaxPagesIsABudgetForTheWholeCall) {
  Mapping m(32 * kPage);
  Userfaultfd u = ArmAsync(m);
  for (size_t i = 0; i < 32; ++i) m.page(i)[0] = 1;
  Result<PagemapScanner> s = PagemapScanner::Open();
  ASSERT_TRUE(s.ok());
  PagemapScanArgs a = WrittenArgs(m, true);
  a.max_pages = 10;
  std::vector<PageRegion> out;
  uint64_t walk_end = 0;
  ASSERT_TRUE(s->ScanAll(a, &out, &walk_end, 4).ok());
  EXPECT_EQ(PagesOf(out, m).size(), 10u);
  EXPECT_EQ(walk_end, m.addr() + 10 * kPage);
  // Only the reported pages were re-armed: the other 22 are still written.
  std::vector<PageRegion> rest;
  ASSERT_TRUE(s->ScanAll(WrittenArgs(m, false), &rest).ok());
  EXPECT_EQ(PagesOf(rest, m).size(), 22u);
}

TEST(PagemapTest, WpMatchingReportsAndRearmsAtomically) {
  Mapping m(8 * kPage);
  Userfaultfd u = ArmAsync(m);
  m.page(2)[0] = 1;
  m.page(5)[0] = 1;
  Result<PagemapScanner> s = PagemapScanner::Open();
  ASSERT_TRUE(s.ok());
  std::vector<PageRegion> out;
  ASSERT_TRUE(s->ScanAll(WrittenArgs(m, true), &out).ok());
  EXPECT_EQ(PagesOf(out, m), (std::set<size_t>{2, 5}));
  out.clear();
  ASSERT_TRUE(s->ScanAll(WrittenArgs(m, true), &out).ok());
  EXPECT_TRUE(out.empty()) << "re-armed pages must read clean until written again";
  m.page(5)[1] = 2;
  ASSERT_TRUE(s->ScanAll(WrittenArgs(m, true), &out).ok());
  EXPECT_EQ(PagesOf(out, m), (std::set<size_t>{5}));
}

TEST(PagemapTest, CheckWpAsyncRefusesUnregisteredRange) {
  Mapping m(4 * kPage);  // not registered with any userfaultfd
  Result<PagemapScanner> s = PagemapScanner::Open();
  ASSERT_TRUE(s.ok());
  std::vector<PageRegion> out;
  Status st = s->ScanAll(WrittenArgs(m, true), &out);
  EXPECT_EQ(st.err(), EPERM) << st.ToString();
}

TEST(PagemapTest, ScanErrorIsReported) {
  ::pagewise::testing::FaultEnv env;
  Mapping m(4 * kPage);
  Result<PagemapScanner> s = PagemapScanner::Open(&env);
  ASSERT_TRUE(s.ok());
  env.Inject(::pagewise::testing::Op::kPagemapScan, {.error = ENOTTY});
  std::vector<PageRegion> out;
  Status st = s->ScanAll(WrittenArgs(m, false), &out);
  EXPECT_EQ(st.code(), Code::kNotSupported);
  EXPECT_NE(st.message().find("Linux 6.7"), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace pagewise::sys
