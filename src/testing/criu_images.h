// Synthetic CRIU images for tests and fuzz seeds: protobuf encoding of
// the few messages pagewise reads, framed as CRIU frames image files, and
// whole dump directories (inventory, pstree, pagemap, mm, pages).
//
// Thread safety: pure functions; WriteDump writes files the caller owns.
#ifndef PAGEWISE_TESTING_CRIU_IMAGES_H_
#define PAGEWISE_TESTING_CRIU_IMAGES_H_

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "criu/images.h"

namespace pagewise::criu::testimg {

inline std::string Varint(uint64_t v) {
  std::string out;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (v);
  return out;
}
inline std::string Field(uint32_t n, uint64_t v) { return Varint(uint64_t{n} << 3) + Varint(v); }
inline std::string Field(uint32_t n, const std::string& bytes) {
  return Varint((uint64_t{n} << 3) | 2) + Varint(bytes.size()) + bytes;
}
inline std::string U32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
// An image file: [IMG_COMMON_MAGIC] type magic, then size-prefixed entries.
inline std::string ImageFile(uint32_t magic, const std::vector<std::string>& entries,
                             bool common = true) {
  std::string out = common ? U32(kImgCommonMagic) : "";
  out += U32(magic);
  for (const std::string& e : entries) out += U32(static_cast<uint32_t>(e.size())) + e;
  return out;
}

struct Entry {
  uint64_t vaddr;
  uint64_t nr_pages;
  uint32_t flags;
  bool new_form;  // nr_pages in field 5 and flags in field 4 (CRIU 3.x+)
};
struct Vma {
  uint64_t start, end;
};
struct Task {
  uint32_t pid;
  std::vector<uint32_t> threads;
};

inline std::string Inventory(uint32_t version) {
  return ImageFile(kInventoryMagic, {Field(1, version) + Field(2, 1)}, false);
}
inline std::string Pstree(const std::vector<Task>& tasks) {
  std::vector<std::string> es;
  for (const Task& t : tasks) {
    std::string e = Field(1, t.pid) + Field(2, 0) + Field(3, t.pid) + Field(4, t.pid);
    for (uint32_t th : t.threads) e += Field(5, th);
    es.push_back(e);
  }
  return ImageFile(kPstreeMagic, es);
}
inline std::string Pagemap(uint32_t pages_id, const std::vector<Entry>& entries) {
  std::vector<std::string> es = {Field(1, pages_id)};
  for (const Entry& e : entries) {
    if (e.new_form) {
      es.push_back(Field(1, e.vaddr) + Field(2, 0) + Field(4, e.flags) + Field(5, e.nr_pages));
    } else {
      es.push_back(Field(1, e.vaddr) + Field(2, e.nr_pages));
    }
  }
  return ImageFile(kPagemapMagic, es);
}
inline std::string Mm(const std::vector<Vma>& vmas) {
  std::string e;
  for (uint32_t f = 1; f <= 11; ++f) e += Field(f, 0x400000);
  e += Field(12, 1);
  for (const Vma& v : vmas) {
    const std::string vma = Field(1, v.start) + Field(2, v.end) + Field(3, 0) + Field(4, 0) +
                            Field(5, PROT_READ | PROT_WRITE) +
                            Field(6, MAP_PRIVATE | MAP_ANONYMOUS) + Field(7, 1 | 512) +
                            Field(8, 1 /* sint64 -1 */);
    e += Field(14, vma);
  }
  return ImageFile(kMmMagic, {e});
}
// n pages whose bytes name their address and a tag.
inline std::string Pages(uint64_t addr, size_t n, char tag) {
  std::string out(n * 4096, tag);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t a = addr + i * 4096;
    std::memcpy(&out[i * 4096], &a, sizeof(a));
  }
  return out;
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}
// A one-task dump directory (pages_id 1).
inline void WriteDump(const std::string& dir, uint32_t pid, const std::vector<Vma>& vmas,
                      const std::vector<Entry>& entries, const std::string& pages) {
  std::filesystem::create_directories(dir);
  const std::string p = std::to_string(pid);
  WriteFile(dir + "/inventory.img", Inventory(kImagesVersion));
  WriteFile(dir + "/pstree.img", Pstree({{pid, {pid}}}));
  WriteFile(dir + "/pagemap-" + p + ".img", Pagemap(1, entries));
  WriteFile(dir + "/mm-" + p + ".img", Mm(vmas));
  WriteFile(dir + "/pages-1.img", pages);
}

}  // namespace pagewise::criu::testimg

#endif  // PAGEWISE_TESTING_CRIU_IMAGES_H_
