// C API: snapshots (full, incremental, live) and images (open, read, verify).
#include <cstring>

#include "capi/capi_internal.h"
#include "pagewise/image.h"
#include "pagewise/live.h"
#include "pagewise/snapshot.h"

namespace pc = pagewise::capi;
using pagewise::Result;
using pagewise::Status;

namespace pagewise::capi {
namespace {

Result<SnapshotOptions> ToSnapshotOptions(const pagewise_snapshot_options* o) {
  SnapshotOptions out;
  if (o == nullptr) return out;
  switch (o->compression) {
    case PAGEWISE_COMPRESSION_NONE:
      out.compression = Compression::kNone;
      break;
    case PAGEWISE_COMPRESSION_ZSTD:
      out.compression = Compression::kZstd;
      break;
    case PAGEWISE_COMPRESSION_LZ4:
      out.compression = Compression::kLz4;
      break;
    default:
      return Status::InvalidArgument("unknown compression value " +
                                     std::to_string(static_cast<int>(o->compression)) +
                                     " (PAGEWISE_COMPRESSION_NONE, _ZSTD or _LZ4)");
  }
  if (o->level < 0 || o->threads < 0) {
    return Status::InvalidArgument("snapshot options: level and threads must be >= 0 (0: default)");
  }
  if (o->level != 0) out.level = o->level;
  if (o->threads != 0) out.threads = o->threads;
  return out;
}

void FromImageStats(const ImageStats& st, int64_t ns, pagewise_snapshot_stats* out) {
  if (out == nullptr) return;
  out->pages = st.pages;
  out->zero_pages = st.zero_pages;
  out->stored_pages = st.stored_pages;
  out->file_bytes = st.file_bytes;
  out->duration_ns = ns;
}

int CheckPath(const char* path, const char* fn) {
  if (path == nullptr) return InvalidArgument(std::string(fn) + ": path is NULL");
  return 0;
}

// What every snapshot call converts first.
struct SnapshotArgs {
  std::vector<Region> regions;
  SnapshotOptions options;
};

// 0, or the error (recorded).
int PrepareSnapshot(const char* fn, const char* path, const pagewise_region* regions, size_t count,
                    const pagewise_snapshot_options* options, SnapshotArgs* a) {
  if (int rc = CheckPath(path, fn); rc != 0) return rc;
  Result<std::vector<Region>> r = ToRegions(regions, count);
  if (!r.ok()) return SetError(r.status());
  Result<SnapshotOptions> opt = ToSnapshotOptions(options);
  if (!opt.ok()) return SetError(opt.status());
  a->regions = std::move(*r);
  a->options = *opt;
  return 0;
}

}  // namespace
}  // namespace pagewise::capi

extern "C" {

int pagewise_snapshot_full(const pagewise_region* regions, size_t count, const char* path,
                           const pagewise_snapshot_options* options,
                           pagewise_snapshot_stats* stats) {
  return pc::Guard([&] {
    pc::SnapshotArgs a;
    const int rc = pc::PrepareSnapshot("pagewise_snapshot_full", path, regions, count, options, &a);
    if (rc != 0) return rc;
    Result<pagewise::SnapshotStats> st = pagewise::SnapshotFull(a.regions, path, a.options);
    if (!st.ok()) return pc::SetError(st.status());
    pc::FromImageStats(st->image, static_cast<int64_t>(st->elapsed_ns), stats);
    return 0;
  });
}

int pagewise_snapshot_incremental(const pagewise_range* written, size_t written_count,
                                  const pagewise_region* regions, size_t count, const char* parent,
                                  const char* path, const pagewise_snapshot_options* options,
                                  pagewise_snapshot_stats* stats) {
  return pc::Guard([&] {
    if (int rc = pc::CheckPath(parent, "pagewise_snapshot_incremental (parent)"); rc != 0) {
      return rc;
    }
    if (written == nullptr && written_count > 0) {
      return pc::InvalidArgument("pagewise_snapshot_incremental: written is NULL");
    }
    std::vector<pagewise::PageRange> w(written_count);
    for (size_t i = 0; i < written_count; ++i) w[i] = {written[i].start, written[i].end};
    pc::SnapshotArgs a;
    const int rc =
        pc::PrepareSnapshot("pagewise_snapshot_incremental", path, regions, count, options, &a);
    if (rc != 0) return rc;
    Result<pagewise::SnapshotStats> st =
        pagewise::SnapshotIncremental(w, a.regions, parent, path, a.options);
    if (!st.ok()) return pc::SetError(st.status());
    pc::FromImageStats(st->image, static_cast<int64_t>(st->elapsed_ns), stats);
    return 0;
  });
}

int pagewise_snapshot_live(const pagewise_region* regions, size_t count, const char* path,
                           const pagewise_snapshot_options* options,
                           pagewise_snapshot_stats* stats) {
  return pc::Guard([&] {
    pc::SnapshotArgs a;
    const int rc = pc::PrepareSnapshot("pagewise_snapshot_live", path, regions, count, options, &a);
    if (rc != 0) return rc;
    pagewise::LiveSnapshotOptions live;
    live.image.compression = a.options.compression;
    live.image.level = a.options.level;
    Result<pagewise::LiveSnapshotStats> st = pagewise::TakeLiveSnapshot(path, a.regions, live);
    if (!st.ok()) return pc::SetError(st.status());
    if (stats != nullptr) {
      // The committed image's own counts, read back from it.
      Result<std::unique_ptr<pagewise::Image>> img = pagewise::Image::Open(path);
      if (!img.ok()) return pc::SetError(img.status());
      pc::FromImageStats((*img)->layers().front().stats, static_cast<int64_t>(st->total_ns), stats);
    }
    return 0;
  });
}

int pagewise_image_open(const char* path, pagewise_image** out) {
  return pc::Guard([&] {
    if (out == nullptr) return pc::InvalidArgument("pagewise_image_open: out is NULL");
    *out = nullptr;
    if (int rc = pc::CheckPath(path, "pagewise_image_open"); rc != 0) return rc;
    Result<std::unique_ptr<pagewise::Image>> img = pagewise::Image::Open(path);
    if (!img.ok()) return pc::SetError(img.status());
    *out = new pagewise_image{std::move(*img)};
    return 0;
  });
}

void pagewise_image_close(pagewise_image* image) { delete image; }

size_t pagewise_image_region_count(const pagewise_image* image) {
  return image == nullptr ? 0 : image->image->regions().size();
}

int pagewise_image_region(const pagewise_image* image, size_t index, pagewise_region* out) {
  return pc::Guard([&] {
    if (image == nullptr || out == nullptr) {
      return pc::InvalidArgument("pagewise_image_region: NULL argument");
    }
    const std::vector<pagewise::Region>& rs = image->image->regions();
    if (index >= rs.size()) {
      return pc::InvalidArgument("pagewise_image_region: index " + std::to_string(index) +
                                 " >= region count " + std::to_string(rs.size()));
    }
    pc::FromRegion(rs[index], out);
    return 0;
  });
}

size_t pagewise_image_layer_count(const pagewise_image* image) {
  return image == nullptr ? 0 : image->image->layers().size();
}

uint64_t pagewise_image_flat_size(const pagewise_image* image) {
  return image == nullptr ? 0 : image->image->flat_size();
}

int pagewise_image_read(const pagewise_image* image, uint32_t region, uint64_t offset, void* dst,
                        size_t len) {
  return pc::Guard([&] {
    if (image == nullptr || (dst == nullptr && len > 0)) {
      return pc::InvalidArgument("pagewise_image_read: NULL argument");
    }
    return pc::SetError(image->image->Read(region, offset, dst, len));
  });
}

int pagewise_image_read_flat(const pagewise_image* image, uint64_t offset, void* dst, size_t len) {
  return pc::Guard([&] {
    if (image == nullptr || (dst == nullptr && len > 0)) {
      return pc::InvalidArgument("pagewise_image_read_flat: NULL argument");
    }
    return pc::SetError(image->image->ReadFlat(offset, dst, len));
  });
}

int pagewise_image_verify(const pagewise_image* image) {
  return pc::Guard([&] {
    if (image == nullptr) return pc::InvalidArgument("pagewise_image_verify: image is NULL");
    pagewise::VerifyError e;
    Status s = image->image->Verify(&e);
    if (s.ok()) return 0;
    std::string where = " (layer " + e.layer;
    if (e.region >= 0) where += ", region " + std::to_string(e.region);
    where += ", offset " + std::to_string(e.offset) + ")";
    return pc::SetError(s.WithContext("verify" + where));
  });
}

}  // extern "C"
