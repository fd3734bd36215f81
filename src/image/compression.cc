// Chunk compression (zstd, LZ4) and the public name <-> enum helpers.
#include "image/compression.h"

#include <lz4.h>
#include <zstd.h>

#include <climits>
#include <cstring>
#include <string>

namespace pagewise {

std::string_view CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kZstd:
      return "zstd";
    case Compression::kLz4:
      return "lz4";
  }
  return "unknown";
}

Result<Compression> ParseCompression(std::string_view name) {
  if (name == "none") return Compression::kNone;
  if (name == "zstd") return Compression::kZstd;
  if (name == "lz4") return Compression::kLz4;
  return Status::InvalidArgument("unknown compression '" + std::string(name) +
                                 "': use zstd, lz4 or none");
}

namespace image {
namespace {

// Per-thread zstd contexts, freed at thread exit.
struct ZstdContexts {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
thread_local ZstdContexts tls_zstd;

}  // namespace

bool CompressChunk(Compression c, int level, const void* src, size_t len,
                   std::vector<uint8_t>* out) {
  switch (c) {
    case Compression::kNone:
      return false;
    case Compression::kZstd: {
      if (tls_zstd.c == nullptr) tls_zstd.c = ZSTD_createCCtx();
      if (tls_zstd.c == nullptr) return false;  // no memory: store raw instead
      out->resize(ZSTD_compressBound(len));
      size_t n = ZSTD_compressCCtx(tls_zstd.c, out->data(), out->size(), src, len, level);
      if (ZSTD_isError(n) || n >= len) return false;
      out->resize(n);
      return true;
    }
    case Compression::kLz4: {
      if (len > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return false;
      out->resize(static_cast<size_t>(LZ4_compressBound(static_cast<int>(len))));
      int n =
          LZ4_compress_default(static_cast<const char*>(src), reinterpret_cast<char*>(out->data()),
                               static_cast<int>(len), static_cast<int>(out->size()));
      if (n <= 0 || static_cast<size_t>(n) >= len) return false;
      out->resize(static_cast<size_t>(n));
      return true;
    }
  }
  return false;
}

Status DecompressChunk(Compression c, const void* src, size_t stored_len, void* dst, size_t raw_len,
                       const std::string& what) {
  switch (c) {
    case Compression::kNone:
      if (stored_len != raw_len) break;
      std::memcpy(dst, src, raw_len);
      return Status::Ok();
    case Compression::kZstd: {
      if (tls_zstd.d == nullptr) tls_zstd.d = ZSTD_createDCtx();
      if (tls_zstd.d == nullptr) {
        return Status(Code::kResourceExhausted, 0, what + ": cannot allocate a zstd context");
      }
      size_t n = ZSTD_decompressDCtx(tls_zstd.d, dst, raw_len, src, stored_len);
      if (ZSTD_isError(n)) {
        return Status::Corruption(what + ": zstd decompression failed (" + ZSTD_getErrorName(n) +
                                  ")");
      }
      if (n != raw_len) break;
      return Status::Ok();
    }
    case Compression::kLz4: {
      if (stored_len > INT_MAX || raw_len > INT_MAX) break;
      int n = LZ4_decompress_safe(static_cast<const char*>(src), static_cast<char*>(dst),
                                  static_cast<int>(stored_len), static_cast<int>(raw_len));
      if (n < 0) return Status::Corruption(what + ": lz4 decompression failed");
      if (static_cast<size_t>(n) != raw_len) break;
      return Status::Ok();
    }
  }
  return Status::Corruption(what + ": decompressed size differs from the recorded " +
                            std::to_string(raw_len) + " bytes");
}

}  // namespace image
}  // namespace pagewise
