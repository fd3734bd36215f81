// `pagewise export IMAGE RAW [--json]`: writes the image's flat view (regions
// at their flat_offset, gaps zero; read with ReadFlat) as a flat memory file,
// byte-identical to the file that was imported. Zero and absent pages and
// all-zero 4 KiB blocks are left as holes, so the output is sparse.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <vector>

#include "command.h"
#include "image_util.h"
#include "pagewise/image.h"

namespace pagewise::cli {
namespace {

struct ExportArgs {
  std::string image, raw;
  bool json = false;
};

// n <= 4096.
bool AllZero(const char* p, size_t n) {
  static const char zeros[4096] = {};
  return std::memcmp(p, zeros, n) == 0;
}

Status WriteAll(int fd, const char* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return ErrnoStatus(errno, "write " + path + " at offset " + std::to_string(off));
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

// Writes flat bytes [off, off+len) (read with ReadFlat) skipping all-zero
// 4 KiB pieces, which stay holes.
Status ExportRange(const Image& img, int fd, const std::string& path, uint64_t off, uint64_t len,
                   std::vector<char>* buf, uint64_t* data_bytes) {
  constexpr uint64_t kBlock = 4 << 20, kPiece = 4096;
  for (uint64_t pos = off; pos < off + len; pos += kBlock) {
    const uint64_t n = std::min(kBlock, off + len - pos);
    buf->resize(n);
    PW_RETURN_IF_ERROR(img.ReadFlat(pos, buf->data(), n));
    for (uint64_t i = 0; i < n;) {
      const uint64_t piece = std::min(kPiece, n - i);
      if (AllZero(buf->data() + i, piece)) {
        i += piece;
        continue;
      }
      uint64_t j = i + piece;
      while (j < n && !AllZero(buf->data() + j, std::min(kPiece, n - j))) {
        j += std::min(kPiece, n - j);
      }
      PW_RETURN_IF_ERROR(WriteAll(fd, buf->data() + i, j - i, pos + i, path));
      *data_bytes += j - i;
      i = j;
    }
  }
  return Status::Ok();
}

// Only pages holding data are read (zero and absent pages, and gaps between
// regions, are holes); then the file is extended to the flat size. The
// bytes go to a temporary file beside RAW, renamed over RAW only once all
// of them are written and synced: a failed export (a damaged image, a full
// disk) leaves an existing RAW as it was and no partial file behind.
Status ExportTo(const Image& img, int fd, const ExportArgs& a, const std::string& tmp,
                uint64_t* size, uint64_t* data_bytes) {
  *size = img.flat_size();
  *data_bytes = 0;
  uint64_t total = 0, done = 0;
  std::vector<std::vector<Image::SourceRun>> runs(img.regions().size());
  for (uint32_t r = 0; r < runs.size(); ++r) {
    PW_RETURN_IF_ERROR(img.ClassifyRuns(r, 0, img.regions()[r].length, &runs[r]));
    for (const auto& run : runs[r]) total += run.kind == PageSourceKind::kData ? run.length : 0;
  }
  ProgressLine progress("export " + a.image);
  std::vector<char> buf;
  for (uint32_t r = 0; r < runs.size(); ++r) {
    const uint64_t base = img.regions()[r].offset;
    for (const auto& run : runs[r]) {
      if (run.kind != PageSourceKind::kData) continue;
      PW_RETURN_IF_ERROR(
          ExportRange(img, fd, tmp, base + run.offset, run.length, &buf, data_bytes));
      done += run.length;
      progress.Update(done, total);
    }
  }
  if (ftruncate(fd, static_cast<off_t>(*size)) != 0) {
    return ErrnoStatus(errno, "set the size of " + tmp);
  }
  if (fsync(fd) != 0) return ErrnoStatus(errno, "fsync " + tmp);
  return Status::Ok();
}

Status Export(const ExportArgs& a, uint64_t* size, uint64_t* data_bytes) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(a.image));
  char probe;
  PW_RETURN_IF_ERROR(img->ReadFlat(0, &probe, 0));  // refuses images without a flat view
  const std::string tmp = a.raw + ".pagewise-export-" + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create " + tmp + " (the export's temporary file)");
  Status s = ExportTo(*img, fd, a, tmp, size, data_bytes);
  if (close(fd) != 0 && s.ok()) s = ErrnoStatus(errno, "close " + tmp);
  if (s.ok() && rename(tmp.c_str(), a.raw.c_str()) != 0) {
    s = ErrnoStatus(errno, "rename " + tmp + " to " + a.raw);
  }
  if (!s.ok()) {
    unlink(tmp.c_str());  // best effort: the error above is what matters
    return s.WithContext("export to " + a.raw + " (left unchanged)");
  }
  return Status::Ok();
}

CommandRegistration reg(
    "export", "Write an image back out as a flat memory file", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<ExportArgs>();
      app->add_option("IMAGE", a->image, "Image (top layer of a chain)")->required();
      app->add_option("RAW", a->raw, "Flat memory file to write")->required();
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        uint64_t size = 0, data = 0;
        Status s = Export(*a, &size, &data);
        if (!s.ok()) return Fail("export", s);
        if (a->json) {
          std::cout << nlohmann::json{{"raw", a->raw}, {"bytes", size}, {"data_bytes", data}}.dump(
                           2)
                    << std::endl;
        } else {
          std::printf("%s: %s (%s non-zero, the rest sparse)\n", a->raw.c_str(),
                      HumanBytes(size).c_str(), HumanBytes(data).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
