// `pagewise import RAW IMAGE [--page-size N] [--compress zstd|lz4|none]
// [--level N] [--json]`: a flat memory file (e.g. Firecracker's guest-memory
// snapshot) becomes an image with one kFlat region at flat_offset 0. The file
// is streamed in 4 MiB blocks; holes (SEEK_HOLE) are recorded as zero pages
// without being read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <vector>

#include "command.h"
#include "criu_cli.h"
#include "image_util.h"
#include "pagewise/image.h"

namespace pagewise::cli {
namespace {

struct ImportArgs {
  std::string raw, image, compress = "zstd";
  std::string criu;  // --criu DIR: a CRIU dump instead of RAW (cmd_criu.cc)
  uint32_t page_size = 4096;
  int level = 1;
  bool json = false;
};

// Adds [from, to) of the raw file: data extents read and added, holes as zero.
Status AddExtent(int fd, ImageWriter* w, uint64_t from, uint64_t to, bool hole,
                 std::vector<char>* buf, ProgressLine* progress, uint64_t total) {
  constexpr uint64_t kBlock = 4 << 20;
  for (uint64_t off = from; off < to;) {
    const uint64_t n = std::min(kBlock, to - off);
    if (hole) {
      PW_RETURN_IF_ERROR(w->AddZeroPages(0, off, n));
    } else {
      buf->resize(n);
      size_t got = 0;
      while (got < n) {
        ssize_t r = pread(fd, buf->data() + got, n - got, static_cast<off_t>(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
          return ErrnoStatus(errno, "read raw file at offset " + std::to_string(off + got));
        if (r == 0)
          return Status::IoError("raw file shrank while importing (offset " +
                                 std::to_string(off + got) + ")");
        got += static_cast<size_t>(r);
      }
      PW_RETURN_IF_ERROR(w->AddPages(0, off, buf->data(), n));
    }
    off += n;
    progress->Update(off, total);
  }
  return Status::Ok();
}

Status Import(const ImportArgs& a, ImageStats* stats) {
  PW_ASSIGN_OR_RETURN(Compression comp, ParseCompression(a.compress));
  int fd = open(a.raw.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open raw file " + a.raw);
  std::unique_ptr<int, void (*)(int*)> closer(&fd, [](int* f) { close(*f); });
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat " + a.raw);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size % a.page_size != 0) {
    return Status::InvalidArgument(a.raw + " is " + std::to_string(size) +
                                   " bytes, not a multiple of the page size " +
                                   std::to_string(a.page_size) + "; pass --page-size");
  }
  ImageWriteOptions opt;
  opt.compression = comp;
  opt.level = a.level;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, ImageWriter::Create(a.image, opt));
  Region r;
  r.length = size;
  r.page_size = a.page_size;
  r.prot = 3;  // PROT_READ | PROT_WRITE: guest memory
  r.kind = RegionKind::kFlat;
  const size_t slash = a.raw.rfind('/');
  r.name = slash == std::string::npos ? a.raw : a.raw.substr(slash + 1);
  r.offset = 0;
  {
    Result<uint32_t> idx = w->AddRegion(r);
    if (!idx.ok()) return idx.status();
  }
  ProgressLine progress("import " + a.raw);
  std::vector<char> buf;
  uint64_t pos = 0;
  while (pos < size) {
    // Data extents and holes, aligned to pages (a partial-page hole is data).
    off_t data = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    uint64_t data_at = data < 0 ? size : static_cast<uint64_t>(data);  // ENXIO: hole to EOF
    data_at = data_at / a.page_size * a.page_size;
    if (data_at > pos) {
      PW_RETURN_IF_ERROR(AddExtent(fd, w.get(), pos, data_at, true, &buf, &progress, size));
      pos = data_at;
      continue;
    }
    off_t hole = lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
    uint64_t hole_at = hole < 0 ? size : static_cast<uint64_t>(hole);
    hole_at = (hole_at + a.page_size - 1) / a.page_size * a.page_size;
    if (hole_at <= pos) hole_at = pos + a.page_size;
    hole_at = std::min(hole_at, size);
    PW_RETURN_IF_ERROR(AddExtent(fd, w.get(), pos, hole_at, false, &buf, &progress, size));
    pos = hole_at;
  }
  PW_RETURN_IF_ERROR(w->Commit());
  *stats = w->stats();
  return Status::Ok();
}

CommandRegistration reg(
    "import", "Convert a flat memory file into a page image", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<ImportArgs>();
      app->add_option("RAW", a->raw, "Flat memory file (not with --criu)");
      app->add_option("IMAGE", a->image, "Image to write");
      app->add_option("--criu", a->criu, "Import a CRIU dump directory: import --criu DIR IMAGE");
      app->add_option("--page-size", a->page_size, "Page size in bytes (default 4096)");
      app->add_option("--compress", a->compress, "zstd (default), lz4 or none");
      app->add_option("--level", a->level, "zstd level (default 1)");
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        if (!a->criu.empty()) {
          if (!a->image.empty() || a->raw.empty()) {
            return Fail("import", Status::InvalidArgument("usage: import --criu DIR IMAGE"));
          }
          return RunCriuImport(a->criu, a->raw, a->compress, a->level, a->json);
        }
        if (a->raw.empty() || a->image.empty()) {
          return Fail("import", Status::InvalidArgument("usage: import RAW IMAGE"));
        }
        ImageStats st;
        Status s = Import(*a, &st);
        if (!s.ok()) return Fail("import", s);
        if (a->json) {
          std::cout << nlohmann::json{{"image", a->image},
                                      {"raw", a->raw},
                                      {"stats", StatsJson(st)}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf(
              "%s: %llu pages (%llu zero, %llu duplicate, %llu stored), data %s -> %s, "
              "file %s\n",
              a->image.c_str(), static_cast<unsigned long long>(st.pages),
              static_cast<unsigned long long>(st.zero_pages),
              static_cast<unsigned long long>(st.duplicate_pages),
              static_cast<unsigned long long>(st.stored_pages), HumanBytes(st.raw_bytes).c_str(),
              HumanBytes(st.compressed_bytes).c_str(), HumanBytes(st.file_bytes).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
