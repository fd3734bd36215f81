// Test helpers: owned mappings of each memory kind pagewise handles, and
// page-pattern helpers. For tests only (linked into pagewise_testing).
//
// Thread safety: a Mapping is owned by one test; its memory may be written
// from any thread.
#ifndef PAGEWISE_TESTING_TEST_UTIL_H_
#define PAGEWISE_TESTING_TEST_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace pagewise::testing {

enum class MemKind { kAnonPrivate, kMemfdShared, kThp };

// An mmap'ed region, unmapped on destruction (unless Release()d).
class Mapping {
 public:
  // Maps `len` bytes of `kind`. kThp maps 2 MiB aligned memory with
  // MADV_HUGEPAGE. Aborts the test process on failure (tests need memory).
  Mapping(size_t len, MemKind kind = MemKind::kAnonPrivate);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  char* data() const { return data_; }
  size_t size() const { return len_; }
  uint64_t addr() const { return reinterpret_cast<uint64_t>(data_); }
  char* page(size_t i) const;
  int memfd() const { return memfd_; }
  void Release() { data_ = nullptr; }

 private:
  char* data_ = nullptr;
  size_t len_ = 0;
  size_t map_len_ = 0;
  char* map_base_ = nullptr;
  int memfd_ = -1;
};

// Fills page `index` of `base` with a pattern derived from (seed, index).
void FillPage(char* page, uint64_t seed, uint64_t index);
// True if the page holds FillPage(seed, index)'s pattern.
bool PageMatches(const char* page, uint64_t seed, uint64_t index);

// A unique temporary directory, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTING_TEST_UTIL_H_
