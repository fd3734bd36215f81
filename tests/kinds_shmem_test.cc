// Lazy restore into shared memory, in process, against the real kernel:
//  - MISSING mode into memfd/shmem (RegionKind::kShared fresh regions, or a
//    caller's MAP_SHARED memfd): UFFDIO_COPY puts the bytes into the page
//    cache, byte-exact, with fork, MADV_REMOVE, mremap and munmap during
//    the restore;
//  - MINOR mode (SharedPageCache): clones map one memfd MAP_PRIVATE and get
//    each page with UFFDIO_CONTINUE from a single page-cache copy until
//    they write; MADV_DONTNEED brings the source back; fork; bad input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/restore.h"
#include "sys/smaps.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

size_t Ps() { return PageSize(); }

// `pages` pages: a pattern, every 5th page (i % 5 == 3) zero.
class Pattern {
 public:
  Pattern(size_t pages, uint64_t seed) : bytes_(pages * Ps(), 0) {
    for (size_t i = 0; i < pages; ++i) {
      if (i % 5 != 3) testing::FillPage(bytes_.data() + i * Ps(), seed, i);
    }
  }
  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  size_t pages() const { return bytes_.size() / Ps(); }
  size_t nonzero_pages() const { return pages() - (pages() + 1) / 5; }
  bool Matches(const char* p, size_t i) const {
    return std::memcmp(p, bytes_.data() + i * Ps(), Ps()) == 0;
  }
  size_t Mismatches(const char* mem) const {
    size_t bad = 0;
    for (size_t i = 0; i < pages(); ++i) bad += !Matches(mem + i * Ps(), i);
    return bad;
  }

 private:
  std::vector<char> bytes_;
};

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

bool AnyRangeRegistered() {
  auto maps = sys::ReadMappings(Env::Default(), 0, 0, ~0ULL);
  if (!maps.ok()) return true;
  for (const sys::MappingInfo& m : *maps) {
    if (m.uffd_missing() || m.uffd_minor()) return true;
  }
  return false;
}

// The "Anonymous:" kB of this process's mapping starting at `start`
// (private copies made by writes), or -1 if not found.
long AnonymousKb(const void* start) {
  std::ifstream smaps("/proc/self/smaps");
  char head[32];
  snprintf(head, sizeof(head), "%lx-", reinterpret_cast<unsigned long>(start));
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    if (line.rfind(head, 0) == 0) {
      in = true;
    } else if (in && line.rfind("Anonymous:", 0) == 0) {
      return std::stol(line.substr(10));
    }
  }
  return -1;
}

Region SharedRegion(uint64_t length) {
  Region r;
  r.length = length;
  r.kind = RegionKind::kShared;
  return r;
}

// ---- MISSING mode ---------------------------------------------------------

TEST(ShmemLazyRestore, MissingModeFillsAFreshSharedMemfdRepeatedly) {
  Pattern buf(300, 1);
  for (int rep = 0; rep < 4; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep % 2 == 0;
    auto r =
        LazyRestore::Start(MemorySource(buf.data(), buf.size()), {SharedRegion(buf.size())}, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const char* mem = (*r)->data(0);
    EXPECT_EQ(buf.Mismatches(mem), 0u) << "rep " << rep;
    ASSERT_TRUE((*r)->Finish().ok());
    auto maps = sys::ReadMappings(Env::Default(), 0, reinterpret_cast<uint64_t>(mem),
                                  reinterpret_cast<uint64_t>(mem) + buf.size());
    ASSERT_TRUE(maps.ok());
    ASSERT_EQ(maps->size(), 1u);
    EXPECT_TRUE((*maps)[0].shared);
    EXPECT_NE((*maps)[0].path.find("memfd:"), std::string::npos) << (*maps)[0].path;
    const RestoreStats st = (*r)->stats();
    EXPECT_EQ(st.pages_demand + st.pages_background + st.eexist_pages, 300u);
    EXPECT_EQ(st.bytes_copied, buf.nonzero_pages() * Ps());
  }
  EXPECT_FALSE(AnyRangeRegistered());
}

TEST(ShmemLazyRestore, MissingModeIntoCallersMemfdPutsTheBytesInTheFile) {
  Pattern buf(128, 2);
  const int fd = memfd_create("kinds-shmem-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, buf.size()), 0);
  void* m = mmap(nullptr, buf.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()),
                              {{reinterpret_cast<uint64_t>(m), buf.size(), 0}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE((*r)->Finish().ok());
  // The file itself (read without the mapping) holds the source.
  std::vector<char> file(buf.size());
  ASSERT_EQ(pread(fd, file.data(), file.size(), 0), static_cast<ssize_t>(file.size()));
  EXPECT_EQ(buf.Mismatches(file.data()), 0u);
  EXPECT_EQ(buf.Mismatches(static_cast<char*>(m)), 0u);
  r->reset();
  ASSERT_EQ(munmap(m, buf.size()), 0);
  close(fd);
}

TEST(ShmemLazyRestore, MissingModeEventsForkRemoveMremapMunmap) {
  Pattern buf(256, 3);
  for (int rep = 0; rep < 3; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep == 2;  // rep 2: the filler races the events
    o.release_when_resident = false;
    auto r =
        LazyRestore::Start(MemorySource(buf.data(), buf.size()), {SharedRegion(buf.size())}, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    (*r)->Release();  // the test moves and unmaps parts itself
    char* mem = (*r)->data(0);
    ASSERT_TRUE(buf.Matches(mem + 10 * Ps(), 10));
    // Punch out pages [40, 60): zeros from now on (filled or not).
    ASSERT_EQ(madvise(mem + 40 * Ps(), 20 * Ps(), MADV_REMOVE), 0);
    EXPECT_TRUE(AllZero(mem + 40 * Ps(), 20 * Ps()));
    // A child shares the memory: it reads the source (or the zeros).
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int bad = 0;
      for (size_t i = 0; i < 128; ++i) {
        const bool ok =
            i >= 40 && i < 60 ? AllZero(mem + i * Ps(), Ps()) : buf.Matches(mem + i * Ps(), i);
        bad += !ok;
      }
      _exit(bad);
    }
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus));
    EXPECT_EQ(WEXITSTATUS(wstatus), 0) << "rep " << rep;
    // Move [128, 192) elsewhere; unmap [192, 224).
    void* hole = mmap(nullptr, 64 * Ps(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(hole, MAP_FAILED);
    void* moved =
        mremap(mem + 128 * Ps(), 64 * Ps(), 64 * Ps(), MREMAP_MAYMOVE | MREMAP_FIXED, hole);
    ASSERT_EQ(moved, hole) << strerror(errno);
    ASSERT_EQ(munmap(mem + 192 * Ps(), 32 * Ps()), 0);
    const char* mv = static_cast<const char*>(moved);
    size_t bad = 0;
    for (size_t k = 0; k < 64; ++k) bad += !buf.Matches(mv + k * Ps(), 128 + k);
    for (size_t i = 224; i < 256; ++i) bad += !buf.Matches(mem + i * Ps(), i);
    for (size_t i = 60; i < 128; ++i) bad += !buf.Matches(mem + i * Ps(), i);
    EXPECT_EQ(bad, 0u) << "rep " << rep;
    ASSERT_TRUE((*r)->Finish().ok());
    const RestoreStats st = (*r)->stats();
    EXPECT_GE(st.removes, 1u);
    EXPECT_GE(st.remaps, 1u);
    EXPECT_GE(st.unmaps, 1u);
    ASSERT_EQ(munmap(mem, 128 * Ps()), 0);
    ASSERT_EQ(munmap(mem + 224 * Ps(), 32 * Ps()), 0);
    ASSERT_EQ(munmap(moved, 64 * Ps()), 0);
  }
  EXPECT_FALSE(AnyRangeRegistered());
}

// ---- MINOR mode: clones sharing one page cache ---------------------------

std::vector<std::unique_ptr<LazyRestore>> StartClones(const std::shared_ptr<PageSource>& src,
                                                      const std::shared_ptr<SharedPageCache>& cache,
                                                      size_t n, uint64_t length, bool background) {
  std::vector<std::unique_ptr<LazyRestore>> clones;
  for (size_t k = 0; k < n; ++k) {
    RestoreOptions o;
    o.page_cache = cache;
    o.fill.background_fill = background;
    o.release_when_resident = false;
    auto r = LazyRestore::Start(src, {{0, length, 0}}, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    clones.push_back(std::move(*r));
  }
  return clones;
}

TEST(ShmemMinorRestore, ClonesShareOnePageCacheCopyUntilTheyWrite) {
  Pattern buf(400, 4);
  for (int rep = 0; rep < 3; ++rep) {
    auto src = MemorySource(buf.data(), buf.size());
    auto made = SharedPageCache::Create(src);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    std::shared_ptr<SharedPageCache> cache = std::move(*made);
    auto clones = StartClones(src, cache, 4, buf.size(), rep != 1);
    ASSERT_EQ(clones.size(), 4u);
    for (size_t k = 0; k < clones.size(); ++k) {
      EXPECT_EQ(buf.Mismatches(clones[k]->data(0)), 0u) << "clone " << k << " rep " << rep;
    }
    for (auto& c : clones) ASSERT_TRUE(c->Finish().ok());
    // One copy of every non-zero page in the page cache, whatever the
    // number of clones; no clone holds a private copy.
    EXPECT_EQ(cache->cached_pages(), buf.nonzero_pages());
    for (auto& c : clones) {
      EXPECT_EQ(AnonymousKb(c->data(0)), 0) << "a clone copied pages it only read";
      const RestoreStats st = c->stats();
      EXPECT_EQ(st.bytes_copied, 0u);
      EXPECT_EQ(st.pages_continued + st.zero_pages + st.eexist_pages, buf.pages())
          << st.pages_continued << " " << st.zero_pages;
    }
    // A write copies the page for that clone alone.
    char* w = clones[0]->data(0);
    std::memset(w + 7 * Ps(), 0x6b, 16);
    EXPECT_EQ(AnonymousKb(w), static_cast<long>(Ps() / 1024));
    EXPECT_TRUE(buf.Matches(clones[1]->data(0) + 7 * Ps(), 7));
    std::vector<char> file(Ps());
    ASSERT_EQ(pread(cache->fd(), file.data(), Ps(), 7 * Ps()), static_cast<ssize_t>(Ps()));
    EXPECT_TRUE(buf.Matches(file.data(), 7)) << "a clone's write reached the shared page cache";
  }
  EXPECT_FALSE(AnyRangeRegistered());
}

TEST(ShmemMinorRestore, DontneedBringsBackTheSourceAndForkServesTheChild) {
  Pattern buf(200, 5);
  auto src = MemorySource(buf.data(), buf.size());
  auto made = SharedPageCache::Create(src);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::shared_ptr<SharedPageCache> cache = std::move(*made);
  for (int rep = 0; rep < 3; ++rep) {
    auto clones = StartClones(src, cache, 2, buf.size(), rep == 2);
    ASSERT_EQ(clones.size(), 2u);
    char* a = clones[0]->data(0);
    ASSERT_TRUE(buf.Matches(a + 20 * Ps(), 20));
    std::memset(a + 20 * Ps(), 0x11, Ps());  // a private copy...
    ASSERT_EQ(madvise(a + 20 * Ps(), 40 * Ps(), MADV_DONTNEED), 0);
    // ...thrown away: the file's (the source's) bytes come back, for the
    // written page, for filled pages and for pages never touched.
    for (size_t i = 20; i < 60; ++i) EXPECT_TRUE(buf.Matches(a + i * Ps(), i)) << i;
    char* b = clones[1]->data(0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(static_cast<int>(std::min<size_t>(buf.Mismatches(b), 100)));
    std::memset(b, 0x22, Ps());  // the parent's write stays out of the child
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus));
    EXPECT_EQ(WEXITSTATUS(wstatus), 0) << "rep " << rep;
    for (size_t i = 1; i < buf.pages(); ++i) EXPECT_TRUE(buf.Matches(b + i * Ps(), i)) << i;
    for (auto& c : clones) ASSERT_TRUE(c->Finish().ok());
    EXPECT_GE(clones[0]->stats().removes, 1u);
  }
  EXPECT_EQ(cache->cached_pages(), buf.nonzero_pages());
}

TEST(ShmemMinorRestore, BadInputIsRefusedAndLeavesNothingRegistered) {
  Pattern buf(16, 6);
  auto src = MemorySource(buf.data(), buf.size());
  auto made = SharedPageCache::Create(src);
  ASSERT_TRUE(made.ok());
  std::shared_ptr<SharedPageCache> cache = std::move(*made);
  RestoreOptions o;
  o.page_cache = cache;
  // Another source than the page cache's.
  auto other = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Code::kInvalidArgument);
  EXPECT_NE(other.status().message().find("another source"), std::string::npos)
      << other.status().ToString();
  // A region at a caller's address.
  void* m = mmap(nullptr, buf.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto given = LazyRestore::Start(src, {{reinterpret_cast<uint64_t>(m), buf.size(), 0}}, o);
  ASSERT_FALSE(given.ok());
  EXPECT_NE(given.status().message().find("address 0"), std::string::npos)
      << given.status().ToString();
  ASSERT_EQ(munmap(m, buf.size()), 0);
  // Huge pages.
  Region huge{0, 2ULL << 20, 0};
  huge.page_size = 2ULL << 20;
  std::vector<char> big(huge.length);
  auto big_src = MemorySource(big.data(), big.size());
  auto big_cache = SharedPageCache::Create(big_src);
  ASSERT_TRUE(big_cache.ok());
  o.page_cache = std::move(*big_cache);
  auto hr = LazyRestore::Start(big_src, {huge}, o);
  ASSERT_FALSE(hr.ok());
  EXPECT_NE(hr.status().message().find("base pages only"), std::string::npos)
      << hr.status().ToString();
  EXPECT_FALSE(AnyRangeRegistered());
}

}  // namespace
}  // namespace pagewise
