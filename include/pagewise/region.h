// Region: one range of memory, the same type everywhere in pagewise.
//
// A Region names [address, address+length) of a process's memory together
// with its place in the flat view of a memory snapshot (`offset`: the byte
// offset of the region in Firecracker's guest-memory file layout, or in an
// image's flat view), its page size, protection, kind and a name. Images
// record Regions (pagewise/image.h), snapshots, checkpoints and live
// snapshots take them (snapshot.h, checkpoint.h, live.h), lazy restore
// maps and fills them (restore.h), and the page server's handshake carries
// them (serve.h: address, length, offset and page_size are the handshake's
// base_host_virt_addr, size, offset and page_size). Fields a user does not
// use keep their defaults.
//
// Thread safety: plain values.
#ifndef PAGEWISE_REGION_H_
#define PAGEWISE_REGION_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "pagewise/export.h"

namespace pagewise {
PAGEWISE_API_BEGIN

enum class RegionKind : uint32_t {
  kAnonymous = 0,  // private anonymous memory
  kShared = 1,     // memfd / shmem, MAP_SHARED
  kFile = 2,       // file-backed mapping
  kFlat = 3,       // imported from a flat memory file
};

struct Region {
  // Virtual address of the region's first byte (0: none yet, e.g. a lazy
  // restore maps fresh memory and fills this in).
  uint64_t address = 0;
  uint64_t length = 0;  // bytes, a multiple of page_size
  // Byte offset of the region in the flat view (flat memory file, image
  // flat view, restore source).
  uint64_t offset = 0;
  uint64_t page_size = 4096;  // bytes, a power of two
  uint32_t prot = 0;          // PROT_* bits (0: not recorded)
  RegionKind kind = RegionKind::kAnonymous;
  std::string name;
};

// The system page size (sysconf(_SC_PAGESIZE)), cached.
size_t PageSize();

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_REGION_H_
