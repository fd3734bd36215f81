// Host facilities a tool built on pagewise needs around the library, so that
// it makes no system call of its own: memory it owns (an anonymous or a
// memfd-backed mapping, unmapped when the owner goes), a private temporary
// directory that removes itself, whether a descriptor is a terminal, and
// running a program to capture what it prints.
//
// The `pagewise` tool (cli/) and the benchmarks use these; a program may as
// well call the kernel directly, nothing here is needed to use the library.
//
// Ownership: MemoryMapping and TempDirectory are move-only owners (like
// std::unique_ptr): the object that holds the mapping or directory releases
// it on destruction; a moved-from object is empty and releases nothing.
//
// Thread safety: IsTerminal and RunProgram are safe from any thread. A
// MemoryMapping or TempDirectory object is used from one thread at a time
// (as any value); the memory a MemoryMapping owns may be read and written
// from any number of threads while the object lives.
#ifndef PAGEWISE_HOST_H_
#define PAGEWISE_HOST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/region.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// ---- memory -------------------------------------------------------------------

// Transparent huge pages for a new mapping (madvise MADV_NOHUGEPAGE /
// MADV_HUGEPAGE). Advice is a hint: a kernel that refuses it (built without
// THP) leaves the mapping as the system's THP mode makes it, no error.
enum class HugePages {
  kDefault,  // no advice: the system's THP mode decides
  kNever,    // 4 KiB pages only (exact page-granular tracking and copying)
  kAlways,   // ask for huge pages (with MapOptions::alignment 2 MiB, all of it)
};

struct MapOptions {
  HugePages huge_pages = HugePages::kDefault;
  // The mapping's start address is a multiple of this (0: the page size).
  // A power of two, a multiple of the page size: 2 MiB lets the kernel back
  // the whole range with huge pages.
  size_t alignment = 0;
};

// Read-write memory owned by this object: private anonymous memory
// (MAP_PRIVATE|MAP_ANONYMOUS, RegionKind::kAnonymous) or a memfd of the
// mapping's size mapped MAP_SHARED (RegionKind::kShared; the memfd is
// owned too and closed with the mapping). Fresh memory reads as zero.
// Destruction (or assignment over it) unmaps it; Release() hands it over.
class MemoryMapping {
 public:
  // Maps `length` bytes of private anonymous memory. Preconditions: length
  // is a non-zero multiple of PageSize(); alignment as MapOptions says.
  // Errors: kInvalidArgument for a length or alignment that breaks them;
  // the kernel's refusal (kResourceExhausted for ENOMEM: ask for less, or
  // raise the limit named by the message) with nothing left mapped.
  static Result<MemoryMapping> Anonymous(size_t length, const MapOptions& options = {});

  // Creates a memfd named `name` (shown in /proc/PID/maps as
  // "/memfd:NAME"), sizes it to `length` and maps it MAP_SHARED. Same
  // preconditions and errors as Anonymous(), plus memfd_create's and
  // ftruncate's (the message names which); after an error nothing is left
  // open or mapped.
  static Result<MemoryMapping> Memfd(size_t length, const std::string& name,
                                     const MapOptions& options = {});

  // Takes ownership of [data, data+size), a mapping the caller made (and
  // of `memfd`, if >= 0, the memfd it maps): the counterpart of Release().
  // Preconditions: data is page aligned, size a multiple of PageSize(),
  // nothing else unmaps it. Never fails.
  static MemoryMapping Adopt(char* data, size_t size, int memfd = -1) {
    return MemoryMapping(data, size, memfd);
  }

  MemoryMapping() = default;  // empty: data() is nullptr, size() 0
  MemoryMapping(MemoryMapping&& other) noexcept;
  MemoryMapping& operator=(MemoryMapping&& other) noexcept;
  MemoryMapping(const MemoryMapping&) = delete;
  MemoryMapping& operator=(const MemoryMapping&) = delete;
  // Unmaps the memory and closes the memfd (errors cannot be reported here:
  // call Unmap() to see them).
  ~MemoryMapping();

  bool empty() const { return data_ == nullptr; }
  char* data() const { return data_; }
  size_t size() const { return size_; }
  // The memfd behind a Memfd() mapping (owned by this object; -1 for
  // anonymous memory or an empty object).
  int memfd() const { return memfd_; }
  RegionKind kind() const { return memfd_ >= 0 ? RegionKind::kShared : RegionKind::kAnonymous; }

  // A Region describing this memory for snapshots, trackers and restores:
  // its address and size, kind(), prot PROT_READ|PROT_WRITE, the system page
  // size, offset 0 and `name`. Precondition: !empty().
  Region AsRegion(std::string name = {}) const;

  // Unmaps now (and closes the memfd); the object is empty afterwards, also
  // after an error. Errors: munmap's (naming the range) or close's; both
  // mean a caller unmapped or closed what this object owned. No-op (OK) on
  // an empty object.
  Status Unmap();

  // Hands the memory to the caller, who must munmap [data(), data()+size())
  // and close memfd() (if >= 0) themselves; the object is empty afterwards.
  void Release();

 private:
  MemoryMapping(char* data, size_t size, int memfd) : data_(data), size_(size), memfd_(memfd) {}

  char* data_ = nullptr;
  size_t size_ = 0;
  int memfd_ = -1;
};

// ---- files ------------------------------------------------------------------

// A new directory only this user may enter (mode 0700, created by
// mkdtemp), removed with everything in it when the owner is destroyed,
// unless Keep() was called. Symbolic links inside are removed, never
// followed.
class TempDirectory {
 public:
  // Creates PREFIX followed by six random characters, e.g. with prefix
  // "/tmp/pagewise-demo-": /tmp/pagewise-demo-a1B2c3. Precondition: the
  // prefix's parent directory exists. Errors: mkdtemp's (kNotFound if the
  // parent is missing, a permission error if it is not writable: the
  // message names the path; choose another parent).
  static Result<TempDirectory> Create(const std::string& prefix);

  TempDirectory() = default;  // empty: path() is ""
  TempDirectory(TempDirectory&& other) noexcept;
  TempDirectory& operator=(TempDirectory&& other) noexcept;
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;
  // Removes the directory and its contents unless kept (errors are
  // ignored here: call Remove() to see them).
  ~TempDirectory();

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(const std::string& name) const { return path_ + "/" + name; }

  // The directory outlives this object (nothing is removed); path() stays.
  void Keep() { keep_ = true; }
  bool kept() const { return keep_; }

  // Removes the directory and its contents now, even if Keep() was
  // called; the object is empty afterwards, also after an error. Errors:
  // kIoError naming the entry that could not be removed. No-op when empty.
  Status Remove();

 private:
  explicit TempDirectory(std::string path) : path_(std::move(path)) {}

  std::string path_;
  bool keep_ = false;
};

// ---- terminals and programs ------------------------------------------------------

// True if `fd` is an open descriptor of a terminal (isatty). False for
// anything else: a pipe, a file, a closed or invalid descriptor. Never fails.
bool IsTerminal(int fd);

struct ProgramOutput {
  // The program's exit status (0..255), or 128 + N if signal N killed it.
  int exit_status = 0;
  std::string stdout_text;  // everything it wrote to its standard output
};

// Runs `path` with argv {path, args...} and the caller's environment, its
// standard input on /dev/null, its standard output captured, its standard
// error shared with the caller; waits until it exits. Blocks the calling
// thread only. A program that exits non-zero is not an error here: the
// caller reads exit_status. Errors: the program could not be started
// (kNotFound for a missing path, a permission error: the message names
// the path), or waiting for it failed.
Result<ProgramOutput> RunProgram(const std::string& path, const std::vector<std::string>& args);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_HOST_H_
