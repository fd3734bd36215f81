// The check's hugetlb and kvm scenarios: hugetlbfs memory with whole huge
// pages dropped under the writers, and a KVM guest as one of the writers
// (its stores reach tracked memory through KVM's fault path).
#include <sys/mman.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "kvm/guest.h"
#include "pagewise/probe.h"
#include "track/check_internal.h"

namespace pagewise::check_internal {
namespace {

constexpr uint64_t kHugePage = 2ull << 20;
// Stamps the guest stores per KVM_RUN (two stores each).
constexpr size_t kGuestBatch = 256;

}  // namespace

Status MapHugetlb(Env* env, size_t len, void** base) {
  Status pool = RequireHugePages(kHugePage, len / kHugePage, "check --scenario hugetlb");
  if (!pool.ok()) {
    // A machine without configured huge pages lacks what the scenario
    // needs, like a kernel lacking a feature: report it as such.
    return Status(Code::kNotSupported, 0, pool.message());
  }
  PW_ASSIGN_OR_RETURN(*base, env->Mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0));
  return Status::Ok();
}

Status DropHugePage(RunState* st, Rng* rng) {
  const size_t per_huge = st->huge / st->page;
  const size_t h = st->HotPage(NowNs(), rng) / per_huge;
  char* p = st->region + h * st->huge;
  return Env::Default()
      ->Madvise(p, st->huge, MADV_DONTNEED)
      .WithContext("check hugetlb: madvise(MADV_DONTNEED) of a whole huge page");
}

Result<std::unique_ptr<kvm::Guest>> MakeCheckGuest(RunState* st) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<kvm::Guest> guest, kvm::Guest::Create());
  PW_ASSIGN_OR_RETURN(kvm::GuestSlot slot, guest->AddMemory(reinterpret_cast<uint64_t>(st->region),
                                                            st->npages * st->page));
  st->guest = guest.get();
  st->guest_phys = slot.guest_phys;
  return guest;
}

void GuestWriter(RunState* st, int tid) {
  Rng rng(st->seed * 7919 + static_cast<uint64_t>(tid) + 1);
  const size_t slot = static_cast<size_t>(tid) * kSlotBytes;
  std::vector<kvm::Guest::Store> stores;
  stores.reserve(2 * kGuestBatch);
  uint64_t counter = 0;
  uint64_t this_round = 0;
  uint32_t round = st->rounds.load(std::memory_order_acquire);
  while (!st->stop.load(std::memory_order_relaxed)) {
    WaitForNextRound(st, &this_round, &round);
    const uint64_t now = NowNs();
    if (now >= st->deadline_ns) break;
    const size_t window = st->WindowStart(now);
    stores.clear();
    for (size_t k = 0; k < kGuestBatch; ++k) {
      const uint64_t p = (window + rng.Below(st->window_pages)) % st->npages;
      const uint64_t at = st->guest_phys + p * st->page + slot;
      // The counter first, then the tag, as the CPU writers store them.
      stores.push_back({at + 8, ++counter});
      stores.push_back({at, StampTag(p, static_cast<uint64_t>(tid))});
    }
    Status s = st->guest->WritePairs(stores);
    if (!s.ok()) {
      st->Fail(s.WithContext("check kvm: the guest's stores"));
      break;
    }
    this_round += kGuestBatch;
  }
  st->writes.fetch_add(counter, std::memory_order_relaxed);
  st->writers_running.fetch_sub(1, std::memory_order_release);
}

}  // namespace pagewise::check_internal
