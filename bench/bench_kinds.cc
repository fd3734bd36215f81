// `pagewise bench kinds`: memory kinds a VMM hands us (issue 11).
//
// Rows measured here (a KVM guest on hugetlbfs memory; needs /dev/kvm and
// reserves the huge pages it needs, giving them back afterwards):
//   uffd-wp-async guest_collect_ms  ms for one Collect() after the guest
//                                   (CPL3 code, writes through KVM) wrote 1%
//                                   of the 4 KiB pages of 1 GiB x scale of
//                                   2 MiB hugetlbfs memory, median of reps;
//                                   baseline kvm_dirty_log: KVM_GET_DIRTY_LOG
//                                   + KVM_CLEAR_DIRTY_LOG of the same slot
//                                   after the same writes, same guest, same
//                                   run.
//   uffd-wp-async guest_write_ns    ns per guest write of that pass (the
//                                   first write to a huge page after a
//                                   collect takes a write-protect fault,
//                                   resolved by the kernel); baseline
//                                   kvm_dirty_log: the same writes with
//                                   dirty logging on (KVM then maps the slot
//                                   with 4 KiB pages and write-protects them).
// Every collect and every dirty log is checked against the written pages
// (outside the timing): a miss fails the benchmark.
// Not measured here yet (they need the restore engine's hugetlbfs, shmem
// MINOR and THP install paths): thp_restore, minor_clones8.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench.h"
#include "kvm/guest.h"
#include "pagewise/probe.h"
#include "pagewise/tracker.h"
#include "sys/env.h"
#include "testing/hugepages.h"

namespace pagewise::bench {
namespace {

constexpr uint64_t kHuge = 2 << 20;
constexpr uint64_t kPage = 4096;
constexpr int kReps = 5;

// Hugetlbfs memory mapped through Env, unmapped on destruction.
class HugeMapping {
 public:
  ~HugeMapping() {
    if (p_ != nullptr) Env::Default()->Munmap(p_, len_).IgnoreError();  // teardown
  }
  Status Map(size_t len) {
    PW_ASSIGN_OR_RETURN(
        p_, Env::Default()->Mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0));
    len_ = len;
    return Status::Ok();
  }
  char* data() const { return static_cast<char*>(p_); }

 private:
  void* p_ = nullptr;
  size_t len_ = 0;
};

// 1% of the 4 KiB pages of the slot, distinct, sorted; one qword each.
std::vector<uint64_t> PickWrites(const kvm::GuestSlot& slot, std::mt19937_64* rng) {
  const uint64_t pages = slot.size / kPage;
  std::vector<uint64_t> picked;
  std::vector<bool> taken(pages, false);
  const uint64_t want = std::max<uint64_t>(1, pages / 100);
  while (picked.size() < want) {
    const uint64_t p = (*rng)() % pages;
    if (taken[p]) continue;
    taken[p] = true;
    picked.push_back(p);
  }
  std::sort(picked.begin(), picked.end());
  std::vector<uint64_t> addrs;
  for (uint64_t p : picked) addrs.push_back(slot.guest_phys + p * kPage + ((*rng)() % 512) * 8);
  return addrs;
}

// Huge pages of `slot` that the writes touched, as host addresses.
std::vector<uint64_t> HugePagesOf(const kvm::GuestSlot& slot, const std::vector<uint64_t>& addrs) {
  std::vector<uint64_t> out;
  for (uint64_t a : addrs) {
    const uint64_t h = slot.host_addr + (a - slot.guest_phys) / kHuge * kHuge;
    if (out.empty() || out.back() != h) out.push_back(h);
  }
  return out;
}

Status CheckReported(const std::vector<PageRange>& ranges, const std::vector<uint64_t>& pages) {
  for (uint64_t h : pages) {
    bool found = false;
    for (const PageRange& r : ranges) found = found || (h >= r.start && h < r.end);
    if (!found) {
      return Status::Internal(
          "bench kinds: uffd-wp-async lost the guest's write to the huge "
          "page at host " +
          std::to_string(h));
    }
  }
  return Status::Ok();
}

struct Pass {
  std::vector<double> collect_ms, write_ns;
};

Status TrackedPasses(kvm::Guest* g, const kvm::GuestSlot& slot, char* mem, std::mt19937_64* rng,
                     Pass* out) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Tracker> t,
                      Tracker::Create({.backend = TrackBackend::kUffdWpAsync}));
  PW_RETURN_IF_ERROR(t->Track(mem, slot.size));
  std::vector<PageRange> written;
  PW_RETURN_IF_ERROR(t->Collect(&written));
  for (int rep = 0; rep < kReps; ++rep) {
    const std::vector<uint64_t> addrs = PickWrites(slot, rng);
    const uint64_t t0 = NowNs();
    PW_RETURN_IF_ERROR(g->WriteList(addrs, 0xC0FFEE00u + rep));
    const uint64_t t1 = NowNs();
    written.clear();
    PW_RETURN_IF_ERROR(t->Collect(&written));
    const uint64_t t2 = NowNs();
    PW_RETURN_IF_ERROR(CheckReported(written, HugePagesOf(slot, addrs)));
    out->write_ns.push_back(static_cast<double>(t1 - t0) / addrs.size());
    out->collect_ms.push_back((t2 - t1) / 1e6);
  }
  return t->Untrack(mem, slot.size);
}

Status DirtyLogPasses(kvm::Guest* g, const kvm::GuestSlot& slot, std::mt19937_64* rng, Pass* out) {
  PW_RETURN_IF_ERROR(g->SetDirtyLogging(slot, true));
  const uint64_t pages = slot.size / kPage;
  std::vector<uint64_t> bitmap((pages + 63) / 64);
  PW_RETURN_IF_ERROR(g->vm().GetDirtyLog(slot.slot, bitmap.data()));
  std::fill(bitmap.begin(), bitmap.end(), ~0ull);
  PW_RETURN_IF_ERROR(
      g->vm().ClearDirtyLog(slot.slot, 0, static_cast<uint32_t>(pages), bitmap.data()));
  for (int rep = 0; rep < kReps; ++rep) {
    const std::vector<uint64_t> addrs = PickWrites(slot, rng);
    const uint64_t t0 = NowNs();
    PW_RETURN_IF_ERROR(g->WriteList(addrs, 0xD1A7E000u + rep));
    const uint64_t t1 = NowNs();
    PW_RETURN_IF_ERROR(g->vm().GetDirtyLog(slot.slot, bitmap.data()));
    PW_RETURN_IF_ERROR(
        g->vm().ClearDirtyLog(slot.slot, 0, static_cast<uint32_t>(pages), bitmap.data()));
    const uint64_t t2 = NowNs();
    for (uint64_t a : addrs) {
      const uint64_t p = (a - slot.guest_phys) / kPage;
      if (((bitmap[p / 64] >> (p % 64)) & 1) == 0) {
        return Status::Internal("bench kinds: the KVM dirty log missed guest page " +
                                std::to_string(p));
      }
    }
    out->write_ns.push_back(static_cast<double>(t1 - t0) / addrs.size());
    out->collect_ms.push_back((t2 - t1) / 1e6);
  }
  return g->SetDirtyLogging(slot, false);
}

Status RunKindsBench(const BenchOptions& opts, BenchReport* report) {
  const uint64_t len = std::max<uint64_t>(
      16 * kHuge, static_cast<uint64_t>((1ull << 30) * opts.scale) / kHuge * kHuge);
  testing::HugePagePool pool(kHuge, len / kHuge);
  if (!pool.ok()) {
    return Status(Code::kResourceExhausted, 0,
                  "bench kinds: cannot reserve " + std::to_string(len / kHuge) +
                      " huge pages of 2 MiB: " + pool.reason() + " (use a smaller --scale)");
  }
  HugeMapping mem;
  PW_RETURN_IF_ERROR(mem.Map(len).WithContext("bench kinds: mapping hugetlbfs guest memory"));
  kvm::GuestOptions go;
  go.manual_dirty_protect = true;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<kvm::Guest> g, kvm::Guest::Create(go));
  PW_ASSIGN_OR_RETURN(kvm::GuestSlot slot,
                      g->AddMemory(reinterpret_cast<uint64_t>(mem.data()), len));
  std::mt19937_64 rng(11);
  // Warm-up: the guest touches every huge page once (KVM maps them).
  PW_RETURN_IF_ERROR(g->Touch(slot.guest_phys, len, kHuge, /*write=*/true, 1));
  Progress(opts, "bench kinds: uffd-wp-async on the guest's hugetlbfs memory");
  Pass tracked, logged;
  PW_RETURN_IF_ERROR(TrackedPasses(g.get(), slot, mem.data(), &rng, &tracked));
  Progress(opts, "bench kinds: KVM dirty log on the same guest");
  PW_RETURN_IF_ERROR(DirtyLogPasses(g.get(), slot, &rng, &logged));
  report->Add({"uffd-wp-async", "guest_collect_ms", Median(tracked.collect_ms), "ms",
               "kvm_dirty_log", Median(logged.collect_ms)});
  report->Add({"uffd-wp-async", "guest_write_ns", Median(tracked.write_ns), "ns", "kvm_dirty_log",
               Median(logged.write_ns)});
  return Status::Ok();
}

BenchRegistration reg("kinds",
                      "Memory kinds: tracking a KVM guest's hugetlbfs memory with uffd-wp-async "
                      "beside KVM's dirty log (collect time, guest write cost)",
                      RunKindsBench);

}  // namespace
}  // namespace pagewise::bench
