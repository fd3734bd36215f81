// libFuzzer target: CRIU image parsers (src/criu/images.h) on arbitrary
// bytes. The first byte picks the parser; the rest is the file. Any input
// must give a value or a Status, never a crash, a hang or a read outside
// the buffer (ASan).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "criu/images.h"
#include "criu/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view file(reinterpret_cast<const char*>(data + 1), size - 1);
  using namespace pagewise::criu;
  switch (data[0] % 5) {
    case 0:
      ParsePagemapImage(file, "pagemap", 4096).status().IgnoreError();
      break;
    case 1:
      ParseMmImage(file, "mm", 4096).status().IgnoreError();
      break;
    case 2:
      ParsePstreeImage(file, "pstree").status().IgnoreError();
      break;
    case 3:
      ParseInventoryImage(file, "inventory").status().IgnoreError();
      break;
    default: {
      WireReader r(file);
      WireField f;
      while (!r.done() && r.Next(&f).ok()) {
      }
      break;
    }
  }
  return 0;
}
