// Content, files, patterns and touching for `pagewise bench restore`.
#include "bench_restore_common.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "pagewise/image.h"
#include "sys/env.h"

namespace pagewise::bench {

Result<BenchMem> BenchMem::Map(size_t len) {
  PW_ASSIGN_OR_RETURN(void* m,
                      Env::Default()->Mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  BenchMem out;
  out.p = static_cast<char*>(m);
  out.len = len;
  return out;
}

BenchMem& BenchMem::operator=(BenchMem&& o) noexcept {
  std::swap(p, o.p);
  std::swap(len, o.len);
  return *this;
}

BenchMem::~BenchMem() {
  if (p != nullptr) Env::Default()->Munmap(p, len).IgnoreError();  // benchmark scratch
}

void MakeContent(char* p, size_t len, uint64_t seed) {
  const size_t page = PageSize();
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> templ(64 * page / 8);
  for (auto& w : templ) w = rng();
  for (size_t off = 0; off < len; off += page) {
    const uint64_t r = rng() % 10;
    if (r < 4) {
      std::memset(p + off, 0, page);
    } else if (r < 7) {
      std::memcpy(p + off, reinterpret_cast<char*>(templ.data()) + (rng() % 64) * page, page);
    } else {
      for (size_t i = 0; i < page; i += 8) {
        uint64_t w = rng();
        std::memcpy(p + off + i, &w, 8);
      }
    }
  }
}

Status WriteImage(const std::string& path, const char* mem, size_t len) {
  ImageWriteOptions wo;
  wo.compression = Compression::kLz4;
  PW_ASSIGN_OR_RETURN(auto writer, ImageWriter::Create(path, wo));
  Region region;
  region.length = len;
  region.page_size = static_cast<uint32_t>(PageSize());
  region.prot = PROT_READ | PROT_WRITE;
  region.kind = RegionKind::kFlat;
  region.name = "bench";
  PW_ASSIGN_OR_RETURN(uint32_t idx, writer->AddRegion(region));
  constexpr size_t kStep = 8 << 20;
  for (size_t off = 0; off < len; off += kStep) {
    PW_RETURN_IF_ERROR(writer->AddPages(idx, off, mem + off, std::min(kStep, len - off)));
  }
  return writer->Commit();
}

Status WriteRaw(const std::string& path, const char* mem, size_t len) {
  Env* env = Env::Default();
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  Status st = WriteFully(env, fd, mem, len, 0);
  Status cl = env->Close(fd);
  PW_RETURN_IF_ERROR(st);
  return cl;
}

std::vector<size_t> Pattern(const std::string& name, size_t pages, uint64_t seed) {
  std::vector<size_t> out;
  std::mt19937_64 rng(seed);
  if (name == "seq") {
    for (size_t i = 0; i < pages; ++i) out.push_back(i);
  } else if (name == "rand10") {
    std::vector<size_t> all(pages);
    for (size_t i = 0; i < pages; ++i) all[i] = i;
    std::shuffle(all.begin(), all.end(), rng);
    out.assign(all.begin(), all.begin() + static_cast<long>(pages / 10));
  } else {  // "ws": a working set of 5% of the pages in 64 clusters
    const size_t per = std::max<size_t>(1, pages / 20 / 64);
    for (int c = 0; c < 64; ++c) {
      size_t start = rng() % (pages - per);
      for (size_t i = 0; i < per; ++i) out.push_back(start + i);
    }
  }
  return out;
}

void Touch(const char* p, const std::vector<size_t>& order, size_t from, size_t to) {
  const size_t page = PageSize();
  to = std::min(to, order.size());
  for (size_t i = from; i < to; ++i) {
    (void)*reinterpret_cast<const volatile uint64_t*>(p + order[i] * page + 64);
  }
}

size_t CountWrongPages(const char* got, const char* expect, const std::vector<size_t>& order) {
  const size_t page = PageSize();
  size_t bad = 0;
  for (size_t i : order) bad += std::memcmp(got + i * page, expect + i * page, page) != 0;
  return bad;
}

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace pagewise::bench
