// libFuzzer target for the image reader: Image::Open, Verify, VerifyImage,
// Read / Classify / ClassifyRuns / TopLayerRuns / ReadFlat over everything
// (sizes capped), on hostile bytes. Nothing may crash, hang, leak or make a
// huge allocation.
//
// Input: [mode u8][top_len u32 LE][top image bytes][parent image bytes].
// The two files are written as t.img and p.img in a private directory on
// tmpfs (the seeds' top layer names its parent "p.img"). Mode bits repair
// what random mutation cannot forge, so the fuzzer reaches the structure
// checks and the decompressors behind the checksums:
//   1: set the header's file_size to the real size
//   2: recompute every chunk's checksums (when the index decodes)
//   4: recompute the index checksum
//   8: recompute the header checksum
// Inputs shorter than 5 bytes are one file, unrepaired.
//
// Seeds: PAGEWISE_WRITE_SEEDS=DIR ./image_reader_fuzz writes a few tiny
// valid inputs into DIR and exits (fuzz/corpus/image_reader_fuzz holds them).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "image/compression.h"
#include "image/format.h"
#include "pagewise/image.h"

namespace {

using pagewise::Compression;
using pagewise::Image;
using pagewise::ImageWriteOptions;
using pagewise::ImageWriter;
using pagewise::Region;
namespace img = pagewise::image;

std::string g_dir;

void WriteFile(const std::string& path, const uint8_t* data, size_t len) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) std::abort();
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  close(fd);
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::vector<uint8_t> out;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) std::abort();
  uint8_t buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
  close(fd);
  return out;
}

// Applies the repairs selected by `mode` to one image file's bytes.
void Repair(uint8_t mode, std::vector<uint8_t>* f) {
  if (f->size() < img::kHeaderSize) return;
  uint8_t* b = f->data();
  if (mode & 1) pagewise::StoreLe64(b + 32, f->size());
  auto fix_header = [&] { pagewise::StoreLe64(b + 248, img::Checksum64(b, 248)); };
  if (mode & 2) {
    fix_header();
    pagewise::Result<img::Header> h = img::DecodeHeader(b, f->size(), f->size(), "fuzz");
    if (h.ok()) {
      pagewise::Result<img::Index> ix =
          img::DecodeIndex(b + h->index_offset, h->index_length, *h, "fuzz");
      if (ix.ok()) {
        std::vector<uint8_t> raw;
        for (img::ChunkEntry& c : ix->chunks) {
          c.stored_checksum = img::Checksum64(b + c.file_offset, c.stored_length);
          if (c.compression == 0) {
            c.raw_checksum = c.stored_checksum;
          } else {
            raw.resize(c.raw_length());
            if (img::DecompressChunk(static_cast<Compression>(c.compression), b + c.file_offset,
                                     c.stored_length, raw.data(), raw.size(), "fuzz")
                    .ok()) {
              c.raw_checksum = img::Checksum64(raw.data(), raw.size());
            }
          }
        }
        std::vector<uint8_t> enc = img::EncodeIndex(*ix);
        if (enc.size() == h->index_length) std::memcpy(b + h->index_offset, enc.data(), enc.size());
      }
    }
  }
  if (mode & 4) {
    const uint64_t off = pagewise::LoadLe64(b + 40), len = pagewise::LoadLe64(b + 48);
    if (off <= f->size() && len <= f->size() - off)
      pagewise::StoreLe64(b + 56, img::Checksum64(b + off, len));
  }
  if (mode & 8) fix_header();
}

void Exercise(const std::string& path) {
  pagewise::Result<std::unique_ptr<Image>> opened = Image::Open(path);
  pagewise::VerifyError err;
  pagewise::VerifyImage(path, &err).IgnoreError();  // outcome irrelevant: must not crash
  if (!opened.ok()) return;
  const Image& image = **opened;
  image.Verify(&err).IgnoreError();
  std::vector<uint8_t> buf;
  std::vector<pagewise::PageSourceKind> kinds;
  std::vector<Image::SourceRun> runs;
  std::vector<std::pair<uint64_t, uint64_t>> top;
  const size_t nregions = std::min<size_t>(image.regions().size(), 64);
  for (uint32_t r = 0; r < nregions; ++r) {
    const Region& reg = image.regions()[r];
    const uint64_t ps = reg.page_size;
    const uint64_t len = std::min<uint64_t>(reg.length, std::max<uint64_t>(ps, 256 << 10));
    buf.resize(len);
    image.Read(r, 0, buf.data(), len).IgnoreError();
    if (reg.length >= ps) image.Read(r, reg.length - ps, buf.data(), ps).IgnoreError();
    image.Classify(r, 0, std::min<uint64_t>(reg.length, 1024 * ps), &kinds).IgnoreError();
    image.ClassifyRuns(r, 0, reg.length, &runs).IgnoreError();
    // Read every data run's first page: reaches every chunk of small images.
    for (size_t i = 0; i < runs.size() && i < 4096; ++i) {
      if (runs[i].kind == pagewise::PageSourceKind::kData) {
        image.Read(r, runs[i].offset, buf.data(), ps).IgnoreError();
      }
    }
    image.TopLayerRuns(r, &top).IgnoreError();
  }
  const uint64_t flat = std::min<uint64_t>(image.flat_size(), 256 << 10);
  buf.resize(flat + 1);
  image.ReadFlat(0, buf.data(), flat).IgnoreError();
  if (flat > 100) image.ReadFlat(37, buf.data(), flat - 90).IgnoreError();
}

// Writes a framed seed: mode 0x0f, top, parent.
void WriteSeed(const std::string& out, const std::vector<uint8_t>& top,
               const std::vector<uint8_t>& parent) {
  std::vector<uint8_t> s(5);
  s[0] = 0x0f;
  pagewise::StoreLe32(&s[1], static_cast<uint32_t>(top.size()));
  s.insert(s.end(), top.begin(), top.end());
  s.insert(s.end(), parent.begin(), parent.end());
  WriteFile(out, s.data(), s.size());
}

void Must(bool ok) {
  if (!ok) std::abort();
}

void WriteSeeds(const std::string& out_dir) {
  const std::string p = g_dir + "/p.img", t = g_dir + "/t.img";
  std::vector<uint8_t> page(512);
  auto fill = [&](int seed) {
    for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>((i * seed) >> 3);
  };
  for (Compression c : {Compression::kZstd, Compression::kLz4, Compression::kNone}) {
    ImageWriteOptions opt;
    opt.compression = c;
    opt.chunk_bytes = 4096;
    auto w = ImageWriter::Create(p, opt);
    Must(w.ok());
    for (int r = 0; r < 2; ++r) {
      Region reg;
      reg.address = 0x10000u * (r + 1);
      reg.length = 16 * 512;
      reg.page_size = 512;
      reg.name = r ? "b" : "a";
      reg.offset = r * 16 * 512;
      Must((*w)->AddRegion(reg).ok());
      for (int i = 0; i < 16; i += 1 + r) {
        fill(i % 5 + 1);
        Must((*w)->AddPages(r, i * 512, page.data(), 512).ok());
      }
    }
    Must((*w)->Commit().ok());
    opt.parent = p;
    opt.compression = c == Compression::kZstd ? Compression::kLz4 : Compression::kZstd;
    auto l = ImageWriter::Create(t, opt);
    Must(l.ok());
    fill(7);
    Must((*l)->AddPages(1, 3 * 512, page.data(), 512).ok());
    Must((*l)->AddZeroPages(0, 4 * 512, 2 * 512).ok());
    Must((*l)->Commit().ok());
    WriteSeed(out_dir + "/chain-" + std::string(pagewise::CompressionName(c)), ReadFile(t),
              ReadFile(p));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/pagewise-fuzz-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) std::abort();
  g_dir = tmpl;
  // The directory is removed at exit with its two files.
  std::atexit([] {
    unlink((g_dir + "/t.img").c_str());
    unlink((g_dir + "/p.img").c_str());
    rmdir(g_dir.c_str());
  });
  if (const char* seeds = std::getenv("PAGEWISE_WRITE_SEEDS")) {
    WriteSeeds(seeds);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t mode = 0;
  std::vector<uint8_t> top, parent;
  if (size < 5) {
    top.assign(data, data + size);
  } else {
    mode = data[0];
    const uint32_t top_len = std::min<uint32_t>(pagewise::LoadLe32(data + 1), size - 5);
    top.assign(data + 5, data + 5 + top_len);
    parent.assign(data + 5 + top_len, data + size);
  }
  Repair(mode, &top);
  Repair(mode, &parent);
  WriteFile(g_dir + "/t.img", top.data(), top.size());
  WriteFile(g_dir + "/p.img", parent.data(), parent.size());
  Exercise(g_dir + "/t.img");
  return 0;
}
