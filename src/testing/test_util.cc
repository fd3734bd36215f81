// Test helper implementations.
#include "testing/test_util.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "testing/skip.h"

namespace pagewise::testing {
namespace {
constexpr size_t kHuge = 2 << 20;
[[noreturn]] void Die(const char* what) {
  std::perror(what);
  std::abort();
}
}  // namespace

Mapping::Mapping(size_t len, MemKind kind) : len_(len) {
  const int prot = PROT_READ | PROT_WRITE;
  switch (kind) {
    case MemKind::kAnonPrivate: {
      void* p = mmap(nullptr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) Die("mmap anon");
      map_base_ = data_ = static_cast<char*>(p);
      map_len_ = len;
      madvise(p, len, MADV_NOHUGEPAGE);  // exact 4K tracking unless THP is asked for
      break;
    }
    case MemKind::kMemfdShared: {
      memfd_ = memfd_create("pagewise-test", MFD_CLOEXEC);
      if (memfd_ < 0 || ftruncate(memfd_, static_cast<off_t>(len)) != 0) Die("memfd");
      void* p = mmap(nullptr, len, prot, MAP_SHARED, memfd_, 0);
      if (p == MAP_FAILED) Die("mmap memfd");
      map_base_ = data_ = static_cast<char*>(p);
      map_len_ = len;
      break;
    }
    case MemKind::kThp: {
      map_len_ = len + kHuge;
      void* p = mmap(nullptr, map_len_, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) Die("mmap thp");
      map_base_ = static_cast<char*>(p);
      uintptr_t aligned = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
      data_ = reinterpret_cast<char*>(aligned);
      if (madvise(data_, len, MADV_HUGEPAGE) != 0) Die("madvise hugepage");
      break;
    }
  }
}

Mapping::~Mapping() {
  if (data_ != nullptr) munmap(map_base_, map_len_);
  if (memfd_ >= 0) close(memfd_);
}

char* Mapping::page(size_t i) const { return data_ + i * static_cast<size_t>(getpagesize()); }

void FillPage(char* page, uint64_t seed, uint64_t index) {
  const size_t n = static_cast<size_t>(getpagesize()) / 8;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (index + 1) * 0xBF58476D1CE4E5B9ull;
  for (size_t i = 0; i < n; ++i) {
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    std::memcpy(page + i * 8, &x, 8);
  }
}

bool PageMatches(const char* page, uint64_t seed, uint64_t index) {
  char expect[65536];
  FillPage(expect, seed, index);
  return std::memcmp(page, expect, static_cast<size_t>(getpagesize())) == 0;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/pagewise-test-XXXXXX";
  char* d = mkdtemp(tmpl);
  if (d == nullptr) Die("mkdtemp");
  path_ = d;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool SkipsForbidden() {
  const char* v = std::getenv("PAGEWISE_FORBID_SKIP");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace pagewise::testing
