// libFuzzer target for the inputs the page server takes from others: the
// Firecracker handshake body (from any process that can connect to the
// socket) and working-set trace files (ReadTrace). Nothing may crash, hang,
// leak or allocate without bound; a body that parses must survive a round
// trip through HandshakeJson.
//
// Input: [mode u8][bytes]. Mode bit 1 clear: bytes are a handshake body.
// Mode bit 1 set: bytes are a trace file (written to a private tmpfs file).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pagewise/restore.h"
#include "pagewise/serve.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    pagewise::Result<std::vector<pagewise::Region>> r = pagewise::ParseHandshake(bytes);
    if (r.ok()) {
      pagewise::Result<std::vector<pagewise::Region>> again =
          pagewise::ParseHandshake(pagewise::HandshakeJson(*r));
      if (!again.ok() || again->size() != r->size()) std::abort();
      for (size_t i = 0; i < r->size(); ++i) {
        const auto& a = (*r)[i];
        const auto& b = (*again)[i];
        if (a.address != b.address || a.length != b.length || a.offset != b.offset ||
            a.page_size != b.page_size) {
          std::abort();
        }
      }
    }
    return 0;
  }
  static const std::string path = [] {
    char tmpl[] = "/dev/shm/pagewise-trace-fuzz-XXXXXX";
    const int fd = mkstemp(tmpl);
    if (fd >= 0) close(fd);
    return std::string(tmpl);
  }();
  const int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return 0;
  const bool written = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  close(fd);
  if (!written) return 0;
  pagewise::Result<pagewise::WorkingSetTrace> t = pagewise::ReadTrace(path);
  if (t.ok() && t->entries.size() * 16 + 40 != bytes.size()) std::abort();
  return 0;
}
