// Working-set prefetch: a trace recorded with faults only, replayed as the
// prefetch list, leaves the replayed accesses with no demand faults.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "pagewise/restore.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

const size_t kPage = PageSize();
constexpr size_t kPages = 2048;

std::vector<char> Content() {
  std::vector<char> data(kPages * kPage);
  for (size_t i = 0; i < kPages; ++i) ::pagewise::testing::FillPage(&data[i * kPage], 5, i);
  return data;
}

// Touches 8 clusters of 6 pages; returns nothing, the reads are volatile.
void TouchWorkingSet(const char* p) {
  for (size_t c = 0; c < 8; ++c) {
    for (size_t i = 0; i < 6; ++i) {
      (void)*reinterpret_cast<const volatile char*>(p + (c * 250 + 3 + i) * kPage);
    }
  }
}

TEST(PrefetchTest, RecordedWorkingSetReplaysWithoutDemandFaults) {
  std::vector<char> data = Content();
  auto source = MemorySource(data.data(), data.size());

  RestoreOptions rec;
  rec.fill.record_trace = true;
  rec.fill.background_fill = false;  // every access faults: the trace is complete
  auto first = LazyRestore::Start(source, {{0, data.size(), 0}}, rec);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  TouchWorkingSet((*first)->data(0));
  const uint64_t faults_without = (*first)->stats().demand_faults;
  WorkingSetTrace trace = (*first)->trace();
  ASSERT_TRUE((*first)->Finish().ok());
  EXPECT_EQ(std::memcmp((*first)->data(0), data.data(), data.size()), 0);
  ASSERT_GT(faults_without, 0u);
  // Every touched page is in the trace (whole fault windows are recorded).
  ASSERT_GE(trace.entries.size(), 48u);

  RestoreOptions replay;
  replay.fill.background_fill = false;  // only the prefetch list may install pages early
  for (const TraceEntry& e : trace.entries) replay.fill.prefetch.push_back(e.offset);
  auto second = LazyRestore::Start(source, {{0, data.size(), 0}}, replay);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  TouchWorkingSet((*second)->data(0));
  EXPECT_EQ((*second)->stats().demand_faults, 0u) << "without prefetch: " << faults_without;
  EXPECT_GE((*second)->stats().pages_prefetch, 48u);
  ASSERT_TRUE((*second)->Finish().ok());
  EXPECT_EQ(std::memcmp((*second)->data(0), data.data(), data.size()), 0);
}

}  // namespace
}  // namespace pagewise
