// The test VMM: a KVM guest whose memory is restored lazily by the page
// server through Firecracker's handshake and touched only by the guest
// (KVM faults it in through get_user_pages on the vCPU's behalf, not this
// process's CPU). The guest's CPL3 code compares every byte of its restored
// memory against a read-only mapping of the source file; afterwards its
// writes are tracked with uffd-wp-async + PAGEMAP_SCAN and every page it
// wrote must be reported. Needs /dev/kvm (skips, saying how to get it,
// where it is missing).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvm/guest.h"
#include "pagewise/serve.h"
#include "pagewise/tracker.h"
#include "restore/restore_testing.h"
#include "testing/hugepages.h"
#include "testing/kvm_test_util.h"
#include "testing/test_util.h"
#include "testing/vmm_client.h"

namespace pagewise {
namespace {

using kvm::Guest;
using kvm::GuestSlot;
using testing::GuestMemKind;
using testing::PatternBuffer;
using testing::Ps;
using testing::VmmClient;

constexpr Duration kFailureTimeout = std::chrono::minutes(2);  // failure detector only

// The source file mapped read-only, for the guest to compare against.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path, size_t len) : len_(len) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      void* p = mmap(nullptr, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (p != MAP_FAILED) data_ = static_cast<char*>(p);
      close(fd);
    }
  }
  ~ReadOnlyFile() {
    if (data_ != nullptr) munmap(data_, len_);
  }
  uint64_t addr() const { return reinterpret_cast<uint64_t>(data_); }

 private:
  char* data_ = nullptr;
  size_t len_;
};

struct Served {
  testing::TempDir dir;
  std::string mem_path;
  std::string sock;
  std::unique_ptr<PageServer> server;
};

// Serves `file` from an in-process PageServer; no background fill, so
// every page the guest reads is a demand fault taken through KVM.
std::string StartServer(const PatternBuffer& file, Served* s) {
  s->mem_path = s->dir.File("guest.mem");
  s->sock = s->dir.File("kinds-kvm.sock");
  if (!file.WriteFile(s->mem_path)) return "cannot write the memory file";
  Result<std::shared_ptr<PageSource>> src = OpenMemFileSource(s->mem_path);
  if (!src.ok()) return src.status().ToString();
  ServeOptions so;
  so.fill.background_fill = false;
  Result<std::unique_ptr<PageServer>> server = PageServer::Start(s->sock, *src, so);
  if (!server.ok()) return server.status().ToString();
  s->server = std::move(server).value();
  return "";
}

TEST(KvmVmm, GuestReadsExactlyTheSourceThroughServe4k) {
  PAGEWISE_REQUIRE_KVM();
  PatternBuffer file(2048, 401);  // 8 MiB
  Served s;
  ASSERT_EQ(StartServer(file, &s), "");
  // Two regions at different file offsets, like a VMM's memory below and
  // above a hole.
  const std::vector<testing::VmmRegion> layout = {{0, 512 * Ps()}, {1024 * Ps(), 1024 * Ps()}};
  VmmClient c;
  ASSERT_EQ(c.Connect(s.sock, layout), "");
  ReadOnlyFile ref(s.mem_path, file.size());
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<GuestSlot> ref_slot = (*g)->AddMemory(ref.addr(), file.size());
  ASSERT_TRUE(ref_slot.ok()) << ref_slot.status().ToString();
  for (size_t r = 0; r < layout.size(); ++r) {
    Result<GuestSlot> slot = (*g)->AddMemory(c.addr(r), layout[r].size);
    ASSERT_TRUE(slot.ok()) << slot.status().ToString();
    uint64_t seen = 0;
    Result<int64_t> diff = (*g)->Compare(slot->guest_phys, ref_slot->guest_phys + layout[r].offset,
                                         layout[r].size, &seen);
    ASSERT_TRUE(diff.ok()) << diff.status().ToString();
    EXPECT_EQ(*diff, -1) << "region " << r << ": the guest read 0x" << std::hex << seen
                         << " at offset 0x" << *diff;
  }
  // A second pass reads what is now resident: still exact.
  Result<GuestSlot> again = (*g)->AddMemory(c.addr(0), layout[0].size);
  ASSERT_TRUE(again.ok());
  Result<int64_t> diff = (*g)->Compare(again->guest_phys, ref_slot->guest_phys, layout[0].size);
  ASSERT_TRUE(diff.ok() && *diff == -1);
  const std::vector<ClientReport> clients = s.server->clients();
  ASSERT_EQ(clients.size(), 1u);
  EXPECT_GE(clients[0].stats.demand_faults, 1u) << "the guest's reads were served as faults";
  EXPECT_EQ(clients[0].stats.poisoned_pages, 0u);
}

// Pages [first, first+count) of `ranges` (sorted) that none covers.
std::vector<uint64_t> Unreported(const std::vector<PageRange>& ranges,
                                 const std::vector<uint64_t>& written) {
  std::vector<uint64_t> lost;
  for (uint64_t a : written) {
    bool found = false;
    for (const PageRange& r : ranges) found = found || (a >= r.start && a < r.end);
    if (!found) lost.push_back(a);
  }
  return lost;
}

// The guest writes pseudo-random pages in rounds; each collect must report
// every page written in its round (through KVM's write faults, resolved by
// the kernel under WP_ASYNC), and re-arm them for the next.
void TrackGuestWrites(Guest* g, char* mem, size_t len, size_t page_size) {
  Result<std::unique_ptr<Tracker>> t = Tracker::Create({TrackBackend::kUffdWpAsync});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->Track(mem, len).ok());
  Result<GuestSlot> slot = g->AddMemory(reinterpret_cast<uint64_t>(mem), len);
  ASSERT_TRUE(slot.ok()) << slot.status().ToString();
  std::mt19937_64 rng(77);
  auto below = [&rng](uint64_t n) { return rng() % n; };
  for (int round = 0; round < 8; ++round) {
    std::vector<uint64_t> guest_addrs, host_addrs;
    const size_t writes = 1 + below(64);
    for (size_t i = 0; i < writes; ++i) {
      const uint64_t off = below(len / 8) * 8;
      guest_addrs.push_back(slot->guest_phys + off);
      host_addrs.push_back(reinterpret_cast<uint64_t>(mem) + off);
    }
    ASSERT_TRUE(g->WriteList(guest_addrs, 0x5EED0000u + round).ok());
    std::vector<PageRange> written;
    ASSERT_TRUE((*t)->Collect(&written).ok());
    EXPECT_EQ(Unreported(written, host_addrs), std::vector<uint64_t>{}) << "round " << round;
    uint64_t reported = 0;
    for (const PageRange& r : written) {
      reported += r.end - r.start;
      EXPECT_EQ(r.start % page_size, 0u);
    }
    // Reports cover whole pages of the memory's size, and not everything.
    EXPECT_LE(reported, writes * page_size) << "round " << round;
    for (uint64_t a : host_addrs) {
      uint64_t v;
      std::memcpy(&v, reinterpret_cast<const void*>(a), 8);
      EXPECT_EQ(v, 0x5EED0000u + round);
    }
  }
}

TEST(KvmVmm, GuestWritesAfterARestoreAreAllTracked) {
  PAGEWISE_REQUIRE_KVM();
  PatternBuffer file(1024, 402);
  Served s;
  ASSERT_EQ(StartServer(file, &s), "");
  VmmClient c;
  ASSERT_EQ(c.Connect(s.sock, {{0, file.size()}}), "");
  ReadOnlyFile ref(s.mem_path, file.size());
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<GuestSlot> mem = (*g)->AddMemory(c.addr(0), file.size());
  Result<GuestSlot> ref_slot = (*g)->AddMemory(ref.addr(), file.size());
  ASSERT_TRUE(mem.ok() && ref_slot.ok());
  Result<int64_t> diff = (*g)->Compare(mem->guest_phys, ref_slot->guest_phys, file.size());
  ASSERT_TRUE(diff.ok()) << diff.status().ToString();
  ASSERT_EQ(*diff, -1);
  // Everything is resident (the guest read it all); disconnect so that the
  // restore's registration goes away, then track the same memory.
  c.CloseUffd();
  close(c.sock());
  ASSERT_TRUE(s.server->WaitClientsDone(1, kFailureTimeout).ok());
  TrackGuestWrites(g->get(), c.mem(0), file.size(), Ps());
}

TEST(KvmVmm, GuestWritesToHugetlbfsAreTrackedPerHugePage) {
  PAGEWISE_REQUIRE_KVM();
  constexpr size_t kHuge = 2 << 20, kLen = 16 * kHuge;
  testing::HugePagePool pool(kHuge, kLen / kHuge);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  void* p = mmap(nullptr, kLen, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  TrackGuestWrites(g->get(), static_cast<char*>(p), kLen, kHuge);
  munmap(p, kLen);
}

TEST(KvmVmm, UserModeOnlyUserfaultfdBreaksTheGuestWithAClearError) {
  PAGEWISE_REQUIRE_KVM();
  PatternBuffer file(64, 403);
  Served s;
  ASSERT_EQ(StartServer(file, &s), "");
  VmmClient c;
  testing::VmmOptions o;
  o.user_mode_only = true;
  ASSERT_EQ(c.Connect(s.sock, {{0, file.size()}}, o), "");
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok());
  Result<GuestSlot> mem = (*g)->AddMemory(c.addr(0), file.size());
  ASSERT_TRUE(mem.ok());
  Result<uint64_t> sum = (*g)->Sum(mem->guest_phys, file.size());
  ASSERT_FALSE(sum.ok()) << "KVM's kernel-mode faults never reach a user-mode-only userfaultfd";
  EXPECT_NE(sum.status().message().find("UFFD_USER_MODE_ONLY"), std::string::npos)
      << sum.status().ToString();
}

}  // namespace
}  // namespace pagewise
