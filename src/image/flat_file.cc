// ImportFlatFile / ExportFlatFile: flat memory files to images and back.
#include "pagewise/flat_file.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "base/atomic_file.h"
#include "image/format.h"
#include "sys/env.h"
#include "sys/files.h"

namespace pagewise {
namespace {

constexpr uint64_t kBlock = 4 << 20;

Status CheckPageSize(uint32_t ps) {
  if (ps < image::kMinPageSize || ps > image::kMaxPageSize || (ps & (ps - 1)) != 0) {
    return Status::InvalidArgument("page size " + std::to_string(ps) +
                                   " is not a power of two between 512 and 16 MiB");
  }
  return Status::Ok();
}

// The raw file, open read-only, closed on destruction.
struct RawFile {
  Env* env;
  int fd = -1;
  ~RawFile() {
    if (fd >= 0) env->Close(fd).IgnoreError();  // read-only: nothing to lose
  }
};

// Adds [from, to) of the raw file: data read and added, holes as zero.
Status AddExtent(const RawFile& raw, const std::string& path, ImageWriter* w, uint64_t from,
                 uint64_t to, bool hole, std::vector<char>* buf, const ProgressFn& progress,
                 uint64_t total) {
  for (uint64_t off = from; off < to;) {
    const uint64_t n = std::min(kBlock, to - off);
    if (hole) {
      PW_RETURN_IF_ERROR(w->AddZeroPages(0, off, to - off));  // one call: no per-block work
      off = to;
    } else {
      buf->resize(n);
      Status s = ReadFully(raw.env, raw.fd, buf->data(), n, static_cast<off_t>(off));
      if (s.code() == Code::kCorruption) {
        return Status::IoError(path + " shrank while being imported (at offset " +
                               std::to_string(off) + ")");
      }
      if (!s.ok()) return s.WithContext("reading " + path);
      PW_RETURN_IF_ERROR(w->AddPages(0, off, buf->data(), n));
      off += n;
    }
    if (progress) progress(off, total);
  }
  return Status::Ok();
}

// Writes flat bytes [off, off+len) of `img`, skipping all-zero 4 KiB
// pieces (they stay holes).
Status ExportRange(const Image& img, AtomicFile* out, uint64_t off, uint64_t len,
                   std::vector<char>* buf, uint64_t* data_bytes) {
  constexpr uint64_t kPiece = 4096;
  static const char zeros[kPiece] = {};
  auto zero = [&](uint64_t i, uint64_t n) { return std::memcmp(buf->data() + i, zeros, n) == 0; };
  for (uint64_t pos = off; pos < off + len; pos += kBlock) {
    const uint64_t n = std::min(kBlock, off + len - pos);
    buf->resize(n);
    PW_RETURN_IF_ERROR(img.ReadFlat(pos, buf->data(), n));
    for (uint64_t i = 0; i < n;) {
      const uint64_t piece = std::min(kPiece, n - i);
      if (zero(i, piece)) {
        i += piece;
        continue;
      }
      uint64_t j = i + piece;
      while (j < n && !zero(j, std::min(kPiece, n - j))) j += std::min(kPiece, n - j);
      PW_RETURN_IF_ERROR(out->Write(buf->data() + i, j - i, pos + i));
      *data_bytes += j - i;
      i = j;
    }
  }
  return Status::Ok();
}

}  // namespace

Status ImportFlatFile(const std::string& raw_path, const std::string& image_path,
                      const ImportOptions& options, ImageStats* stats, const ProgressFn& progress) {
  const uint32_t ps = options.page_size;
  PW_RETURN_IF_ERROR(CheckPageSize(ps));
  if (!options.write.parent.empty()) {
    return Status::InvalidArgument(
        "import writes a base image: options.write.parent must be empty");
  }
  Env* env = Env::Default();
  RawFile raw{env};
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
  // below as not a regular file).
  PW_ASSIGN_OR_RETURN(raw.fd, env->Open(raw_path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
  PW_ASSIGN_OR_RETURN(sys::FileIdentity id, sys::IdentifyFd(raw.fd));
  if (!id.regular()) {
    return Status::InvalidArgument(raw_path + " is a " + id.TypeName() +
                                   ", not a regular file (a flat memory file)");
  }
  const uint64_t size = id.size;
  if (size % ps != 0) {
    return Status::InvalidArgument(raw_path + " is " + std::to_string(size) +
                                   " bytes, not a multiple of the page size " + std::to_string(ps) +
                                   "; pass --page-size");
  }
  PW_RETURN_IF_ERROR(CheckOutputPath(image_path, {raw_path}));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w,
                      ImageWriter::Create(image_path, options.write));
  Region r;
  r.length = size;
  r.page_size = ps;
  r.prot = 3;  // PROT_READ | PROT_WRITE: guest memory
  r.kind = RegionKind::kFlat;
  const size_t slash = raw_path.rfind('/');
  r.name = slash == std::string::npos ? raw_path : raw_path.substr(slash + 1);
  if (r.name.size() > image::kMaxStringBytes) r.name.resize(image::kMaxStringBytes);
  r.offset = 0;
  {
    Result<uint32_t> idx = w->AddRegion(r);
    if (!idx.ok()) return idx.status();
  }
  std::vector<char> buf;
  uint64_t pos = 0;
  while (pos < size) {
    // Data extents and holes, aligned to pages (a partial-page hole is data).
    PW_ASSIGN_OR_RETURN(uint64_t data_at, sys::NextData(raw.fd, pos, size));
    data_at = data_at / ps * ps;
    if (data_at > pos) {
      PW_RETURN_IF_ERROR(
          AddExtent(raw, raw_path, w.get(), pos, data_at, true, &buf, progress, size));
      pos = data_at;
      continue;
    }
    PW_ASSIGN_OR_RETURN(uint64_t hole_at, sys::NextHole(raw.fd, pos, size));
    hole_at = (hole_at + ps - 1) / ps * ps;
    if (hole_at <= pos) hole_at = pos + ps;
    hole_at = std::min(hole_at, size);
    PW_RETURN_IF_ERROR(
        AddExtent(raw, raw_path, w.get(), pos, hole_at, false, &buf, progress, size));
    pos = hole_at;
  }
  PW_RETURN_IF_ERROR(w->Commit());
  if (stats != nullptr) *stats = w->stats();
  return Status::Ok();
}

Status ExportFlatFile(const std::string& image_path, const std::string& raw_path,
                      ExportResult* result, const ProgressFn& progress) {
  ExportResult unused;
  if (result == nullptr) result = &unused;
  *result = ExportResult();
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(image_path));
  char probe;
  PW_RETURN_IF_ERROR(img->ReadFlat(0, &probe, 0));  // refuses images without a flat view
  AtomicFileOptions fo;
  for (const LayerInfo& l : img->layers()) fo.inputs.push_back(l.path);
  // Only pages holding data are read (zero and absent pages, and gaps
  // between regions, are holes); the work follows the runs, not the sizes
  // the image declares.
  uint64_t total = 0, done = 0;
  std::vector<std::vector<Image::SourceRun>> runs(img->regions().size());
  for (uint32_t r = 0; r < runs.size(); ++r) {
    PW_RETURN_IF_ERROR(img->ClassifyRuns(r, 0, img->regions()[r].length, &runs[r]));
    for (const auto& run : runs[r]) total += run.kind == PageSourceKind::kData ? run.length : 0;
  }
  PW_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> out, AtomicFile::Create(raw_path, fo));
  std::vector<char> buf;
  for (uint32_t r = 0; r < runs.size(); ++r) {
    const uint64_t base = img->regions()[r].offset;
    for (const auto& run : runs[r]) {
      if (run.kind != PageSourceKind::kData) continue;
      PW_RETURN_IF_ERROR(
          ExportRange(*img, out.get(), base + run.offset, run.length, &buf, &result->data_bytes));
      done += run.length;
      if (progress) progress(done, total);
    }
  }
  result->bytes = img->flat_size();
  if (result->bytes > static_cast<uint64_t>(INT64_MAX)) {
    return Status::InvalidArgument("image " + image_path + ": flat size " +
                                   std::to_string(result->bytes) +
                                   " is beyond what a file can hold");
  }
  PW_RETURN_IF_ERROR(out->Truncate(result->bytes));
  return out->Commit();
}

}  // namespace pagewise
