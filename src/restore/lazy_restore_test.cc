// LazyRestore against the real kernel: content from each source kind,
// demand windows, pre-populated pages (EEXIST), poisoning when the source
// fails, and working-set record/prefetch.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "base/pause_point.h"
#include "pagewise/restore.h"
#include "restore/restore_testing.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::PatternBuffer;
using testing::Ps;

// Checks every page of a restored region against the source buffer.
size_t CountMismatches(const char* mem, const PatternBuffer& buf, size_t first_page, size_t pages) {
  size_t bad = 0;
  for (size_t i = 0; i < pages; ++i) {
    if (!buf.Matches(mem + i * Ps(), first_page + i)) bad++;
  }
  return bad;
}

TEST(LazyRestore, RestoresBufferContentAndBecomesResident) {
  PatternBuffer buf(300, 1);
  std::atomic<int> resident_calls{0};
  RestoreOptions o;
  o.on_resident = [&](const Status& s, const RestoreStats& st) {
    EXPECT_TRUE(s.ok());
    EXPECT_GE(st.resident_ns, 0);
    resident_calls++;
  };
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(CountMismatches((*r)->data(0), buf, 0, buf.pages()), 0u);
  ASSERT_TRUE((*r)->WaitResident(std::chrono::seconds(60)).ok());
  EXPECT_TRUE((*r)->resident());
  RestoreStats st = (*r)->stats();
  EXPECT_EQ(st.pages_total, 300u);
  EXPECT_EQ(st.pages_demand + st.pages_background + st.eexist_pages, 300u);
  EXPECT_EQ(st.zero_pages, 60u);  // every 5th page is zero
  EXPECT_EQ(st.bytes_copied, 240u * Ps());
  EXPECT_GE(st.resident_ns, 0);
  ASSERT_TRUE((*r)->Finish().ok());
  EXPECT_EQ(resident_calls.load(), 1);
  EXPECT_EQ(CountMismatches((*r)->data(0), buf, 0, buf.pages()), 0u);
}

// At "engine.space.closed" (the loop thread, right after it closed a
// space): whether on_resident had already run. The first close fulfils
// `closed`.
class ResidencyAtClose final : public pause::PauseListener {
 public:
  explicit ResidencyAtClose(const std::atomic<bool>* resident) : resident_(resident) {}
  void Reached(const char* point) override {
    if (std::strcmp(point, "engine.space.closed") != 0) return;
    if (closes_++ == 0) {
      resident_at_first_close_ = resident_->load();
      closed_.set_value();
    }
  }
  std::future<void> closed() { return closed_.get_future(); }
  bool resident_at_first_close() const { return resident_at_first_close_; }

 private:
  const std::atomic<bool>* resident_;
  int closes_ = 0;  // the loop thread only
  bool resident_at_first_close_ = false;
  std::promise<void> closed_;
};

// A complete space is released (its userfaultfd closed) only once the
// restore was reported resident: otherwise an observer could see every
// space closed and the restore not resident, and take a complete task for
// one whose memory is gone (CRIU's daemon killed such a task at stop).
// Only demand faults fill here, so the loop thread fills the last page and
// then releases the space: no filler can report residency first.
TEST(LazyRestore, ReleasedSpaceWasReportedResidentBeforeItClosed) {
  PatternBuffer buf(32, 12);
  std::atomic<bool> resident{false};
  RestoreOptions o;
  o.fill.background_fill = false;
  o.fill.fault_window_pages = 1;
  o.release_when_resident = true;
  o.on_resident = [&](const Status&, const RestoreStats&) { resident = true; };
  ResidencyAtClose listener(&resident);
  std::future<void> closed = listener.closed();
  struct Attached {
    explicit Attached(pause::PauseListener* l) { pause::Attach(l); }
    ~Attached() { pause::Detach(); }
  } attached(&listener);  // detached after the restore (below) is destroyed
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(CountMismatches((*r)->data(0), buf, 0, buf.pages()), 0u);  // faults every page
  closed.wait();
  EXPECT_TRUE(listener.resident_at_first_close());
  EXPECT_TRUE((*r)->resident());
  EXPECT_EQ((*r)->stats().spaces_live, 0u);
  ASSERT_TRUE((*r)->Finish().ok());
}

TEST(LazyRestore, DemandFaultFillsOneAlignedWindow) {
  PatternBuffer buf(256, 2);
  RestoreOptions o;
  o.fill.background_fill = false;
  o.fill.fault_window_pages = 16;
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  char* mem = (*r)->data(0);
  // The fault is counted before the fill; the fill's page counts and the
  // latency sample land after the faulting thread was woken (checked below,
  // once Finish() synchronised with the server).
  EXPECT_TRUE(buf.Matches(mem + 100 * Ps(), 100));
  EXPECT_EQ((*r)->stats().demand_faults, 1u);
  // Pages of the same window (96..111) do not fault again; the next does.
  EXPECT_TRUE(buf.Matches(mem + 96 * Ps(), 96));
  EXPECT_TRUE(buf.Matches(mem + 111 * Ps(), 111));
  EXPECT_EQ((*r)->stats().demand_faults, 1u);
  EXPECT_TRUE(buf.Matches(mem + 112 * Ps(), 112));
  EXPECT_EQ((*r)->stats().demand_faults, 2u);
  EXPECT_FALSE((*r)->resident());
  ASSERT_TRUE((*r)->Finish().ok());  // finishes in the background
  EXPECT_TRUE((*r)->resident());
  RestoreStats st = (*r)->stats();
  EXPECT_EQ(st.demand_faults, 2u);
  EXPECT_EQ(st.pages_demand, 32u);  // two windows of 16
  EXPECT_EQ(st.pages_background, 256u - 32u);
  EXPECT_GE(st.first_fault_ns, 0);
  EXPECT_EQ(st.fault_latency_ns.size(), 2u);
  EXPECT_GT(st.fault_latency_p50_ns, 0u);
  EXPECT_GE(st.fault_latency_p99_ns, st.fault_latency_p50_ns);
  EXPECT_EQ(CountMismatches(mem, buf, 0, buf.pages()), 0u);
}

TEST(LazyRestore, RestoresFromMemFileBothAccessModes) {
  testing::TempDir dir;
  PatternBuffer buf(200, 3);
  const std::string path = dir.File("mem.raw");
  ASSERT_TRUE(buf.WriteFile(path));
  for (MemFileAccess access : {MemFileAccess::kMmap, MemFileAccess::kPread}) {
    auto src = OpenMemFileSource(path, access);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    EXPECT_EQ((*src)->size(), buf.size());
    // Two regions at different source offsets.
    auto r = LazyRestore::Start(*src, {{0, 50 * Ps(), 0}, {0, 80 * Ps(), 120 * Ps()}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(CountMismatches((*r)->data(1), buf, 120, 80), 0u);
    EXPECT_EQ(CountMismatches((*r)->data(0), buf, 0, 50), 0u);
    ASSERT_TRUE((*r)->Finish().ok());
  }
  EXPECT_FALSE(OpenMemFileSource(dir.File("missing")).ok());
}

TEST(LazyRestore, ImageSourceUsesClassificationForZeroPages) {
  PatternBuffer buf(100, 4);
  // Regions [0, 40) and [48, 100) of the flat view; [40, 48) is a gap.
  auto image = std::make_shared<testing::FakeImage>(
      &buf, std::vector<std::pair<uint64_t, uint64_t>>{{0, 40 * Ps()}, {48 * Ps(), 52 * Ps()}});
  std::shared_ptr<PageSource> src = ImageSource(image);
  EXPECT_EQ(src->size(), buf.size());
  EXPECT_TRUE(src->can_classify());
  auto r = LazyRestore::Start(src, {{0, 100 * Ps(), 0}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  char* mem = (*r)->data(0);
  size_t bad = 0, zero_pages = 0;
  for (size_t i = 0; i < 100; ++i) {
    const bool gap = i >= 40 && i < 48;
    if (gap || testing::IsZeroPageIndex(i)) zero_pages++;
    if (gap ? !testing::AllZero(mem + i * Ps(), Ps()) : !buf.Matches(mem + i * Ps(), i)) bad++;
  }
  EXPECT_EQ(bad, 0u);
  ASSERT_TRUE((*r)->Finish().ok());
  RestoreStats st = (*r)->stats();
  EXPECT_EQ(st.zero_pages, zero_pages);
  EXPECT_EQ(st.bytes_copied, (100 - zero_pages) * Ps());
}

TEST(LazyRestore, PagesAlreadyPresentAreKeptAndCountedAsEexist) {
  PatternBuffer buf(256, 5);
  for (int rep = 0; rep < 3; ++rep) {
    void* m = mmap(nullptr, buf.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    char* mem = static_cast<char*>(m);
    const size_t own[] = {3, 40, 200, 201};  // 3 is a zero page in the source
    for (size_t i : own) testing::FillPage(mem + i * Ps(), 99, i);
    RestoreOptions o;
    o.fill.background_fill = rep != 0;  // rep 0: only faults (and Finish) fill
    auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()),
                                {{reinterpret_cast<uint64_t>(mem), buf.size(), 0}}, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)->data(0), mem);
    size_t bad = 0;
    for (size_t i = 0; i < buf.pages(); ++i) {
      const bool mine = i == 3 || i == 40 || i == 200 || i == 201;
      if (mine ? !testing::PageMatches(mem + i * Ps(), 99, i) : !buf.Matches(mem + i * Ps(), i)) {
        bad++;
      }
    }
    EXPECT_EQ(bad, 0u);
    ASSERT_TRUE((*r)->Finish().ok());
    EXPECT_EQ((*r)->stats().eexist_pages, 4u);
    munmap(mem, buf.size());
  }
}

// A source whose pages [bad_lo, bad_hi) cannot be read.
class FailingSource final : public PageSource {
 public:
  FailingSource(const PatternBuffer* buf, size_t bad_lo, size_t bad_hi)
      : buf_(buf), lo_(bad_lo * Ps()), hi_(bad_hi * Ps()) {}
  uint64_t size() const override { return buf_->size(); }
  Status Read(uint64_t offset, void* dst, size_t len) const override {
    if (offset < hi_ && offset + len > lo_) return Status::IoError("injected read failure");
    std::memcpy(dst, buf_->data() + offset, len);
    return Status::Ok();
  }
  std::string Describe() const override { return "failing"; }

 private:
  const PatternBuffer* buf_;
  uint64_t lo_, hi_;
};

TEST(LazyRestore, UnreadableSourcePagesRaiseSigbusNeverZeros) {
  PatternBuffer buf(64, 6);
  auto src = std::make_shared<FailingSource>(&buf, 20, 22);
  RestoreOptions o;
  o.fill.fault_window_pages = 1;
  o.fill.background_fill = false;
  auto r = LazyRestore::Start(src, {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  char* mem = (*r)->data(0);
  std::vector<char> page(Ps());
  bool bus21 = false;
  bool ok10 = false;
  std::thread reader([&] {
    bus21 = testing::ReadPageOrSigbus(mem + 21 * Ps(), page.data());
    ok10 = !testing::ReadPageOrSigbus(mem + 10 * Ps(), page.data()) && buf.Matches(page.data(), 10);
  });
  reader.join();
  EXPECT_TRUE(bus21) << "a page the source could not give must not read as anything";
  EXPECT_TRUE(ok10);
  Status s = (*r)->Finish();
  EXPECT_EQ(s.code(), Code::kIoError) << s.ToString();
  EXPECT_GE((*r)->stats().poisoned_pages, 1u);
  // After the restore stopped, the other unreadable page is poisoned too.
  bool bus20 = false;
  std::thread after([&] { bus20 = testing::ReadPageOrSigbus(mem + 20 * Ps(), page.data()); });
  after.join();
  EXPECT_TRUE(bus20);
  EXPECT_EQ(CountMismatches(mem + 22 * Ps(), buf, 22, 42), 0u);
}

TEST(LazyRestore, RecordsTraceAndPrefetchesItFirst) {
  testing::TempDir dir;
  PatternBuffer buf(512, 7);
  const std::vector<size_t> order = {450, 3, 477, 3, 412, 490, 450};
  WorkingSetTrace trace;
  {
    RestoreOptions o;
    o.fill.background_fill = false;
    o.fill.fault_window_pages = 1;
    o.fill.record_trace = true;
    auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t p : order) EXPECT_TRUE(buf.Matches((*r)->data(0) + p * Ps(), p));
    trace = (*r)->trace();
    ASSERT_TRUE((*r)->Finish().ok());
  }
  ASSERT_EQ(trace.entries.size(), 5u);
  const size_t want[] = {450, 3, 477, 412, 490};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(trace.entries[i].offset, want[i] * Ps());
  for (size_t i = 1; i < 5; ++i) EXPECT_GE(trace.entries[i].time_ns, trace.entries[i - 1].time_ns);
  EXPECT_EQ(trace.source_size, buf.size());
  const std::string path = TracePathFor(dir.File("mem.raw"));
  ASSERT_TRUE(WriteTrace(path, trace).ok());

  Result<WorkingSetTrace> loaded = ReadTrace(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  RestoreOptions o;
  for (const TraceEntry& e : loaded->entries) o.fill.prefetch.push_back(e.offset);
  o.fill.background_batch_pages = 8;
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE((*r)->WaitResident(std::chrono::seconds(60)).ok());
  // The trace's pages sit near the end: had the address-order fill got to
  // them first they would not count as prefetched.
  EXPECT_EQ((*r)->stats().pages_prefetch, 5u);
  EXPECT_EQ(CountMismatches((*r)->data(0), buf, 0, buf.pages()), 0u);
  EXPECT_EQ((*r)->stats().demand_faults, 0u);
  ASSERT_TRUE((*r)->Finish().ok());
}

TEST(LazyRestore, FaultClassesBytesByPathAndPrefetchWasteAddUp) {
  PatternBuffer buf(512, 9);
  RestoreOptions o;
  o.fill.background_fill = false;  // only faults and the prefetch list install pages
  o.fill.fault_window_pages = 8;
  o.release_when_resident = false;
  // Page 300 twice, and an offset outside the region: one page prefetched,
  // two entries wasted.
  o.fill.prefetch = {300 * Ps(), 300 * Ps(), 5000 * Ps()};
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  char* mem = (*r)->data(0);
  // Three demand faults (windows at 0, 64, 128), then a dropped page read
  // back as zero (a zero-class fault).
  EXPECT_TRUE(buf.Matches(mem + 1 * Ps(), 1));
  EXPECT_TRUE(buf.Matches(mem + 65 * Ps(), 65));
  EXPECT_TRUE(buf.Matches(mem + 130 * Ps(), 130));
  EXPECT_TRUE(buf.Matches(mem + 300 * Ps(), 300));  // prefetched: no fault
  ASSERT_EQ(madvise(mem + 2 * Ps(), Ps(), MADV_DONTNEED), 0);
  EXPECT_TRUE(testing::AllZero(mem + 2 * Ps(), Ps()));
  ASSERT_TRUE((*r)->Finish().ok());
  const RestoreStats st = (*r)->stats();
  EXPECT_EQ(st.demand_faults, 3u);
  EXPECT_EQ(st.latency_demand.count, 3u);
  EXPECT_EQ(st.latency_late_prefetch.count, 0u);
  EXPECT_EQ(st.latency_zero.count, st.other_faults);
  EXPECT_GE(st.latency_zero.count, 1u);
  EXPECT_EQ(st.fault_latency_ns.size(), 3u);
  EXPECT_EQ(st.fault_time_ns.size(), 3u);
  EXPECT_GE(st.latency_demand.PercentileNs(0.99), st.latency_demand.PercentileNs(0.5));
  EXPECT_EQ(st.pages_prefetch, 1u);
  EXPECT_EQ(st.prefetch_waste_entries, 2u);
  EXPECT_EQ(st.pages_readahead, 0u);
  // Bytes by path add up to bytes_copied (every 5th page is zero).
  EXPECT_EQ(st.bytes_demand + st.bytes_readahead + st.bytes_prefetch + st.bytes_background,
            st.bytes_copied);
  EXPECT_EQ(st.bytes_demand, 20 * Ps());  // 3 windows of 8 pages, 4 of them zero
  EXPECT_EQ(st.bytes_prefetch, Ps());
}

TEST(LazyRestore, RejectsBadRegions) {
  PatternBuffer buf(16, 8);
  auto src = MemorySource(buf.data(), buf.size());
  EXPECT_EQ(LazyRestore::Start(src, {}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(LazyRestore::Start(src, {{0, 100, 0}}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(LazyRestore::Start(src, {{0, 16 * Ps(), 8 * Ps()}}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(LazyRestore::Start(nullptr, {{0, Ps(), 0}}).status().code(), Code::kInvalidArgument);
}

TEST(LazyRestore, RejectsFillPolicyOutOfRangeInsteadOfClamping) {
  PatternBuffer buf(16, 8);
  auto src = MemorySource(buf.data(), buf.size());
  struct Case {
    const char* field;
    void (*set)(FillPolicy*);
  } cases[] = {
      {"fault_window_pages", [](FillPolicy* f) { f->fault_window_pages = 0; }},
      {"fault_window_pages", [](FillPolicy* f) { f->fault_window_pages = 513; }},
      {"background_batch_pages", [](FillPolicy* f) { f->background_batch_pages = 0; }},
      {"background_batch_pages", [](FillPolicy* f) { f->background_batch_pages = 4097; }},
      {"max_latency_samples", [](FillPolicy* f) { f->max_latency_samples = (1u << 24) + 1; }},
  };
  for (const Case& c : cases) {
    RestoreOptions o;
    c.set(&o.fill);
    const Status v = ValidateFillPolicy(o.fill);
    EXPECT_EQ(v.code(), Code::kInvalidArgument) << c.field;
    EXPECT_NE(v.message().find(c.field), std::string::npos) << v.ToString();
    EXPECT_NE(v.message().find("["), std::string::npos) << "names the range: " << v.ToString();
    auto r = LazyRestore::Start(src, {{0, buf.size(), 0}}, o);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.field;
  }
  FillPolicy edges;
  edges.fault_window_pages = 512;
  edges.background_batch_pages = 1;
  EXPECT_TRUE(ValidateFillPolicy(edges).ok());
}

TEST(LazyRestore, WaitResidentTimesOutWithKTimeout) {
  PatternBuffer buf(64, 9);
  RestoreOptions o;
  o.fill.background_fill = false;  // nothing touches the memory: never resident
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Status w = (*r)->WaitResident(std::chrono::milliseconds(5));
  EXPECT_EQ(w.code(), Code::kTimeout) << w.ToString();
  EXPECT_EQ((*r)->WaitResident(Duration::zero()).code(), Code::kTimeout);
  ASSERT_TRUE((*r)->Finish().ok());  // turns the filler on
  EXPECT_TRUE((*r)->WaitResident(Duration::zero()).ok());
}

// mincore() fails with ENOMEM on a range that is not mapped.
bool Mapped(const void* p, size_t len) {
  std::vector<unsigned char> vec(len / Ps());
  return mincore(const_cast<void*>(p), len, vec.data()) == 0;
}

TEST(LazyRestore, OwnsTheMemoryItMappedUnlessReleased) {
  PatternBuffer buf(32, 10);
  void* given =
      mmap(nullptr, buf.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(given, MAP_FAILED);
  char* fresh = nullptr;
  {
    auto r = LazyRestore::Start(
        MemorySource(buf.data(), buf.size()),
        {{0, buf.size(), 0}, {reinterpret_cast<uint64_t>(given), buf.size(), 0}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    fresh = (*r)->data(0);
    EXPECT_EQ(CountMismatches(fresh, buf, 0, buf.pages()), 0u);
  }
  EXPECT_FALSE(Mapped(fresh, buf.size())) << "a fresh mapping is the restore's: unmapped";
  EXPECT_TRUE(Mapped(given, buf.size())) << "a mapping the caller gave stays the caller's";
  EXPECT_EQ(CountMismatches(static_cast<char*>(given), buf, 0, buf.pages()), 0u);
  munmap(given, buf.size());

  char* kept = nullptr;
  {
    auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    (*r)->Release();
    kept = (*r)->data(0);
  }
  ASSERT_TRUE(Mapped(kept, buf.size())) << "Release() hands the mapping to the caller";
  EXPECT_EQ(CountMismatches(kept, buf, 0, buf.pages()), 0u);  // resident before it stopped
  munmap(kept, buf.size());
}

}  // namespace
}  // namespace pagewise
