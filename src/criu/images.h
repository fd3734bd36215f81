// CRIU image files: framing and the few messages pagewise reads.
//
// A CRIU image file (images format v1.1, CRIU 2.x .. 4.x) is: a u32 head
// magic (IMG_COMMON_MAGIC; the inventory has none), a u32 magic naming the
// image type, then entries, each a u32 byte count and a protobuf message of
// that many bytes (little-endian, as CRIU writes on x86-64). pages-N.img
// is raw page data without a header. The messages are decoded by our own
// minimal definitions (field numbers from CRIU's images/*.proto; unknown
// fields skipped): inventory_entry (img_version), pstree_entry (pids),
// pagemap_head (pages_id), pagemap_entry (vaddr, nr_pages, flags),
// mm_entry (the VMA list: vma_entry start, end, flags, status...).
//
// Parsers take the whole file's bytes and never read outside them:
// malformed input is kCorruption naming the file and what is wrong; a
// wrong magic says which image type was expected. They are fuzzed
// (fuzz/criu_images_fuzz.cc).
//
// Thread safety: pure functions over values.
#ifndef PAGEWISE_CRIU_IMAGES_H_
#define PAGEWISE_CRIU_IMAGES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::criu {

inline constexpr uint32_t kImgCommonMagic = 0x54564319;
inline constexpr uint32_t kInventoryMagic = 0x58313116;
inline constexpr uint32_t kPstreeMagic = 0x50273030;
inline constexpr uint32_t kPagemapMagic = 0x56084025;
inline constexpr uint32_t kMmMagic = 0x57492820;
// inventory_entry.img_version of every CRIU since 1.x (CRTOOLS_IMAGES_V1_1).
inline constexpr uint32_t kImagesVersion = 2;

// pagemap_entry.flags.
inline constexpr uint32_t kPeParent = 1;   // the pages are in the parent dump
inline constexpr uint32_t kPeLazy = 2;     // may be restored lazily
inline constexpr uint32_t kPePresent = 4;  // the pages are in this dump's pages-N.img

// vma_entry.status bits we look at.
inline constexpr uint32_t kVmaAreaVsyscall = 1u << 2;
inline constexpr uint32_t kVmaAreaVdso = 1u << 3;
inline constexpr uint32_t kVmaAreaVvar = 1u << 12;

struct PagemapEntry {
  uint64_t vaddr = 0;
  uint64_t nr_pages = 0;
  uint32_t flags = 0;  // kPe* (old images without flags: derived as CRIU does)
};

struct Pagemap {
  uint32_t pages_id = 0;  // pages-<pages_id>.img holds the PRESENT pages
  std::vector<PagemapEntry> entries;
};

struct Vma {
  uint64_t start = 0, end = 0, pgoff = 0, shmid = 0;
  uint32_t prot = 0, flags = 0, status = 0;
  // What CRIU's restorer registers with the task's userfaultfd: private
  // anonymous, not locked, not hugetlb, not vdso/vvar/vsyscall.
  bool lazy_capable() const;
};

struct Mm {
  std::vector<Vma> vmas;  // sorted by start, as CRIU writes them
};

struct PstreeEntry {
  uint32_t pid = 0, ppid = 0, pgid = 0, sid = 0;
  std::vector<uint32_t> threads;
};

// Splits an image file into its entries' message bytes (views into
// `file`). `name` names the file in errors. Refuses more than max_entries.
Result<std::vector<std::string_view>> SplitImage(std::string_view file, uint32_t type_magic,
                                                 bool common_head, const std::string& name,
                                                 size_t max_entries = 1 << 24);

// Whole-file parsers. Inventory: its img_version (any other version than
// kImagesVersion is kNotSupported naming both).
Result<uint32_t> ParseInventoryImage(std::string_view file, const std::string& name);
Result<std::vector<PstreeEntry>> ParsePstreeImage(std::string_view file, const std::string& name);
// Also checks that entries are page-aligned, non-empty, sorted and do not
// overlap.
Result<Pagemap> ParsePagemapImage(std::string_view file, const std::string& name, size_t page_size);
// Also checks that VMAs are non-empty, page-aligned, sorted, disjoint.
Result<Mm> ParseMmImage(std::string_view file, const std::string& name, size_t page_size);

// Reads a whole (small) image file through env. kNotFound if missing;
// kCorruption if larger than max_bytes.
Result<std::string> ReadSmallFile(Env* env, const std::string& path, uint64_t max_bytes);

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_IMAGES_H_
