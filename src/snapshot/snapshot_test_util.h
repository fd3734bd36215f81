// Test helpers for the snapshot tests: seeded page-content mixes, residency
// and address-space checks. Header-only, for *_test.cc files.
//
// Thread safety: the functions touch only what they are given; a PageMixer
// (it owns a random generator) belongs to one thread.
#ifndef PAGEWISE_SNAPSHOT_SNAPSHOT_TEST_UTIL_H_
#define PAGEWISE_SNAPSHOT_SNAPSHOT_TEST_UTIL_H_

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "image/image_env.h"
#include "pagewise/tracker.h"
#include "snapshot/snapshot_env.h"
#include "sys/env.h"
#include "sys/residency.h"

namespace pagewise::testing {

inline size_t Pg() { return PageSize(); }

// Writes pages with a seeded mix: zero pages, duplicates of a few shared
// patterns, and unique random pages.
class PageMixer {
 public:
  explicit PageMixer(uint64_t seed) : rng_(seed) {
    for (auto& d : dups_) {
      d.resize(Pg());
      FillRandom(d.data());
    }
  }
  uint64_t Next(uint64_t n) { return rng_() % n; }
  void FillRandom(char* page) {
    for (size_t i = 0; i < Pg(); i += 8) {
      const uint64_t v = rng_();
      std::memcpy(page + i, &v, 8);
    }
  }
  // zero_pct% zero, dup_pct% one of 4 duplicate patterns, the rest random.
  void WritePage(char* page, int zero_pct = 30, int dup_pct = 30) {
    const uint64_t r = Next(100);
    if (r < static_cast<uint64_t>(zero_pct)) {
      std::memset(page, 0, Pg());
    } else if (r < static_cast<uint64_t>(zero_pct + dup_pct)) {
      std::memcpy(page, dups_[Next(dups_.size())].data(), Pg());
    } else {
      FillRandom(page);
    }
  }
  // Picks `count` distinct pages in [0, pages).
  std::set<uint64_t> Pick(uint64_t pages, uint64_t count) {
    std::set<uint64_t> out;
    while (out.size() < count) out.insert(Next(pages));
    return out;
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::vector<char>> dups_{4};
};

// Page ranges (absolute addresses) of the pages `idx` of a region at `base`,
// coalesced.
inline std::vector<PageRange> ToRanges(const std::set<uint64_t>& idx, uint64_t base) {
  std::vector<PageRange> out;
  for (uint64_t i : idx) {
    const uint64_t s = base + i * Pg();
    if (!out.empty() && out.back().end == s) {
      out.back().end += Pg();
    } else {
      out.push_back({s, s + Pg()});
    }
  }
  return out;
}

// Is page `p` resident (populated)? mincore on anonymous memory; false if
// it is not mapped.
inline bool Resident(const void* p) {
  Result<std::vector<bool>> resident = sys::ResidentPages(p, Pg());
  return resident.ok() && (*resident)[0];
}

// True if nothing is mapped in [addr, addr+len): a MAP_FIXED_NOREPLACE
// mapping there succeeds (and is unmapped again).
inline bool AddressFree(uint64_t addr, size_t len) {
  void* want = reinterpret_cast<void*>(addr);
  Result<void*> p = Env::Default()->Mmap(want, len, PROT_NONE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (!p.ok()) return false;
  Env::Default()->Munmap(*p, len).IgnoreError();  // our own probe mapping
  return *p == want;
}

// Count of lines in /proc/self/maps (to detect leaked mappings).
inline size_t MapsLines() {
  FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return 0;
  size_t n = 0;
  int c;
  while ((c = std::fgetc(f)) != EOF) n += c == '\n';
  std::fclose(f);
  return n;
}

}  // namespace pagewise::testing

#endif  // PAGEWISE_SNAPSHOT_SNAPSHOT_TEST_UTIL_H_
