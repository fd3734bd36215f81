// CriuDump: the memory of a CRIU dump directory, as pagewise sees it.
//
// Opening a dump reads inventory.img (the images version must be one we
// know), pstree.img (the tasks), and for every task pagemap-PID.img and
// mm-PID.img. Each pagemap entry, split at VMA boundaries (a userfaultfd
// copy must stay inside one VMA), becomes a DumpRegion; the regions of all
// tasks, in pstree order then address order, are laid end to end in one
// flat view (region i's bytes at flat_offset). That flat view is what the
// lazy-pages daemon serves from, what `pagewise import --criu` stores as
// an image (same regions, same offsets) and what `pagewise serve --tcp`
// serves over the network: a client that opened the same dump's layout
// (pagemaps and mm only; the pages can be elsewhere) checks the layout
// digest and reads flat offsets.
//
// Where the bytes are (only with OpenOptions::data): PE_PRESENT pages in
// pages-<pages_id>.img of the dump, in pagemap order; PE_PARENT pages in
// the parent dump (the `parent` link of the directory, as `criu dump
// --prev-images-dir` makes it), resolved recursively by address. A dump
// whose data cannot be found (missing pages file, too short, a parent that
// lacks a page) fails at Open with the file and address named.
//
// Thread safety: immutable after Open; Read may be called from any thread.
#ifndef PAGEWISE_CRIU_DUMP_H_
#define PAGEWISE_CRIU_DUMP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "criu/images.h"
#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::criu {

struct DumpRegion {
  uint32_t pid = 0;
  uint64_t address = 0;  // in the task, at dump time
  uint64_t length = 0;   // bytes
  uint64_t flat_offset = 0;
  uint32_t flags = 0;  // the pagemap entry's kPe* flags
  uint32_t prot = 0;   // the VMA's PROT_* bits
  bool lazy() const { return (flags & kPeLazy) != 0; }
};

struct DumpTask {
  uint32_t pid = 0;
  size_t threads = 0;
  uint64_t lazy_pages = 0;  // pages CRIU leaves to the lazy-pages daemon
  // Regions of this task: regions()[first_region, first_region + nregions).
  size_t first_region = 0, nregions = 0;
};

class CriuDump {
 public:
  struct OpenOptions {
    Env* env = nullptr;  // nullptr: Env::Default()
    // Locate (and map) every page's bytes: needed to Read. Without it only
    // the layout is read (a client whose pages come over the network).
    bool data = true;
  };
  static Result<std::shared_ptr<CriuDump>> Open(const std::string& dir, const OpenOptions& options);
  static Result<std::shared_ptr<CriuDump>> Open(const std::string& dir) {
    return Open(dir, OpenOptions{});
  }

  virtual ~CriuDump() = default;

  virtual const std::string& dir() const = 0;
  virtual const std::vector<DumpTask>& tasks() const = 0;
  virtual const std::vector<DumpRegion>& regions() const = 0;
  virtual const DumpTask* FindTask(uint32_t pid) const = 0;
  virtual uint64_t flat_size() const = 0;
  // LayoutDigest(regions()): two opens of copies of one dump agree; any
  // other dump differs.
  virtual uint64_t layout_digest() const = 0;
  // Bytes of this dump's own pages-*.img files (not the parents').
  virtual uint64_t pages_file_bytes() const = 0;
  // Dumps in the chain: 1 + the parents'.
  virtual size_t chain_length() const = 0;

  // Copies flat bytes [offset, offset+len) (beyond flat_size: zeros).
  // kFailedPrecondition if opened without data; kIoError from the files.
  virtual Status Read(uint64_t offset, void* dst, size_t len) const = 0;
  // A pointer to mapped bytes when [offset, offset+len) lies in one piece
  // of one pages file; nullptr otherwise.
  virtual const void* Direct(uint64_t offset, size_t len) const = 0;
};

// XXH64 over (pid, address, length, flat offset, lazy) of every region.
uint64_t LayoutDigest(const std::vector<DumpRegion>& regions);

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_DUMP_H_
