// Image format v1: index encoding and validating decoder.
#include <algorithm>
#include <cstring>

#include "base/bytes.h"
#include "image/format.h"

namespace pagewise::image {
namespace {

class Writer {
 public:
  void U32(uint32_t v) {
    size_t o = Grow(4);
    StoreLe32(&b_[o], v);
  }
  void U64(uint64_t v) {
    size_t o = Grow(8);
    StoreLe64(&b_[o], v);
  }
  void U8(uint8_t v) { b_.push_back(v); }
  void Bytes(const void* p, size_t n) {
    size_t o = Grow(n);
    if (n > 0) std::memcpy(&b_[o], p, n);
  }
  std::vector<uint8_t> Take() { return std::move(b_); }

 private:
  size_t Grow(size_t n) {
    size_t o = b_.size();
    b_.resize(o + n);
    return o;
  }
  std::vector<uint8_t> b_;
};

// Bounds-checked cursor over the index bytes; failures name the file offset.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n, uint64_t base, const std::string& where, uint64_t* bad_at)
      : p_(p), n_(n), base_(base), where_(where), bad_at_(bad_at) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  uint64_t file_offset() const { return base_ + pos_; }
  bool Need(size_t k) const { return left() >= k; }
  uint32_t U32() {
    uint32_t v = LoadLe32(p_ + pos_);
    pos_ += 4;
    return v;
  }
  uint64_t U64() {
    uint64_t v = LoadLe64(p_ + pos_);
    pos_ += 8;
    return v;
  }
  uint8_t U8() { return p_[pos_++]; }
  std::string Str(size_t k) {
    std::string s(reinterpret_cast<const char*>(p_ + pos_), k);
    pos_ += k;
    return s;
  }
  void Skip(size_t k) { pos_ += k; }
  Status Bad(const std::string& what, uint64_t at) const {
    if (bad_at_ != nullptr) *bad_at_ = at;
    return Status::Corruption("image " + where_ + ": index entry at file offset " +
                              std::to_string(at) + ": " + what +
                              "; the file is damaged: re-create it or restore a copy");
  }
  Status Bad(const std::string& what) const { return Bad(what, file_offset()); }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  uint64_t base_;
  const std::string& where_;
  uint64_t* bad_at_;
};

bool IsPow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
bool ValidPageSize(uint64_t ps) { return IsPow2(ps) && ps >= kMinPageSize && ps <= kMaxPageSize; }

// Adds with overflow detection.
bool AddOk(uint64_t* acc, uint64_t v) {
  if (*acc > UINT64_MAX - v) return false;
  *acc += v;
  return true;
}

Status DecodeRegions(Reader& r, const Header& h, Index* ix) {
  ix->regions.reserve(h.region_count);
  uint32_t min_ps = 0;
  for (uint32_t i = 0; i < h.region_count; ++i) {
    const uint64_t at = r.file_offset();
    if (!r.Need(kRegionFixedBytes)) return r.Bad("region " + std::to_string(i) + " truncated");
    Region reg;
    reg.address = r.U64();
    reg.length = r.U64();
    reg.offset = r.U64();
    reg.page_size = r.U32();
    reg.prot = r.U32();
    uint32_t kind = r.U32();
    uint32_t name_len = r.U32();
    if (!ValidPageSize(reg.page_size)) {
      return r.Bad(
          "region " + std::to_string(i) + ": bad page size " + std::to_string(reg.page_size), at);
    }
    if (reg.length % reg.page_size != 0 || reg.length > (uint64_t{1} << 62) ||
        reg.offset > (uint64_t{1} << 62)) {
      return r.Bad("region " + std::to_string(i) + ": bad length/flat offset", at);
    }
    if (kind > static_cast<uint32_t>(RegionKind::kFlat)) {
      return r.Bad("region " + std::to_string(i) + ": unknown kind " + std::to_string(kind), at);
    }
    reg.kind = static_cast<RegionKind>(kind);
    if (name_len > kMaxStringBytes || !r.Need(name_len)) {
      return r.Bad("region " + std::to_string(i) + ": bad name length", at);
    }
    reg.name = r.Str(name_len);
    if (min_ps == 0 || reg.page_size < min_ps) min_ps = reg.page_size;
    ix->regions.push_back(std::move(reg));
  }
  if (h.page_size != min_ps) {
    return r.Bad("header page size " + std::to_string(h.page_size) +
                 " is not the smallest region page size " + std::to_string(min_ps));
  }
  return Status::Ok();
}

Status DecodeChunks(Reader& r, const Header& h, Index* ix) {
  ix->chunks.reserve(h.chunk_count);
  uint64_t stored = 0, raw = 0, pages = 0;
  for (uint64_t i = 0; i < h.chunk_count; ++i) {
    const uint64_t at = r.file_offset();
    if (!r.Need(kChunkEntryBytes)) return r.Bad("chunk table truncated");
    ChunkEntry c;
    c.file_offset = r.U64();
    c.stored_length = r.U32();
    c.page_count = r.U32();
    c.page_size = r.U32();
    c.compression = r.U8();
    r.Skip(3);
    c.stored_checksum = r.U64();
    c.raw_checksum = r.U64();
    const std::string name = "chunk " + std::to_string(i);
    if (!ValidPageSize(c.page_size) || c.page_count == 0 || c.page_count > kMaxSlotsPerChunk ||
        c.raw_length() > kMaxChunkRawBytes) {
      return r.Bad(name + ": bad page size/count", at);
    }
    if (c.compression > static_cast<uint8_t>(Compression::kLz4) || c.stored_length == 0 ||
        (c.compression == 0 &&
         (c.stored_length != c.raw_length() || c.stored_checksum != c.raw_checksum))) {
      return r.Bad(name + ": bad compression/stored length", at);
    }
    if (c.file_offset < kHeaderSize || c.file_offset > h.index_offset ||
        c.stored_length > h.index_offset - c.file_offset) {
      return r.Bad(name + ": data outside the data area", at);
    }
    stored += c.stored_length;  // each < 2^32 and count bounded: no overflow
    raw += c.raw_length();
    pages += c.page_count;
    ix->chunks.push_back(c);
  }
  if (stored != h.stat_compressed_bytes || raw != h.stat_raw_bytes ||
      pages != h.stat_stored_pages) {
    return r.Bad("chunk table disagrees with the header's stored/compressed totals");
  }
  // The chunks must tile the data area exactly: every data byte belongs to
  // exactly one checksummed chunk.
  std::vector<uint64_t> order(ix->chunks.size());
  for (uint64_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](uint64_t a, uint64_t b) {
    return ix->chunks[a].file_offset < ix->chunks[b].file_offset;
  });
  uint64_t expect = kHeaderSize;
  for (uint64_t i : order) {
    if (ix->chunks[i].file_offset != expect) {
      return r.Bad("chunk " + std::to_string(i) + " at file offset " +
                   std::to_string(ix->chunks[i].file_offset) + " leaves a gap or overlaps (" +
                   "expected " + std::to_string(expect) + ")");
    }
    expect += ix->chunks[i].stored_length;
  }
  if (expect != h.index_offset) {
    return r.Bad("data chunks end at " + std::to_string(expect) + ", index starts at " +
                 std::to_string(h.index_offset));
  }
  return Status::Ok();
}

Status DecodeRuns(Reader& r, const Header& h, Index* ix) {
  uint64_t total = 0, zero = 0;
  uint32_t prev_region = 0;
  uint64_t prev_end = 0;
  bool have_prev = false;
  for (uint64_t i = 0; i < h.run_count; ++i) {
    const uint64_t at = r.file_offset();
    if (!r.Need(kRunFixedBytes)) return r.Bad("run table truncated");
    Run run;
    run.region = r.U32();
    uint32_t kind = r.U32();
    run.first_page = r.U64();
    run.count = r.U64();
    const std::string name = "run " + std::to_string(i);
    if (run.region >= ix->regions.size() || kind > 1 || run.count == 0) {
      return r.Bad(name + ": bad region, kind or count", at);
    }
    run.kind = static_cast<RunKind>(kind);
    const Region& reg = ix->regions[run.region];
    const uint64_t region_pages = reg.length / reg.page_size;
    if (run.first_page > region_pages || run.count > region_pages - run.first_page) {
      return r.Bad(name + ": pages beyond the end of region " + std::to_string(run.region), at);
    }
    if (have_prev &&
        (run.region < prev_region || (run.region == prev_region && run.first_page < prev_end))) {
      return r.Bad(name + ": runs out of order or overlapping", at);
    }
    have_prev = true;
    prev_region = run.region;
    prev_end = run.first_page + run.count;
    if (!AddOk(&total, run.count)) return r.Bad(name + ": page count overflow", at);
    if (run.kind == RunKind::kZero) {
      zero += run.count;
    } else {
      if (run.count > r.left() / 8) return r.Bad(name + ": page references truncated", at);
      run.ref_index = ix->refs.size();
      for (uint64_t k = 0; k < run.count; ++k) {
        const uint64_t ref_at = r.file_offset();
        uint64_t ref = r.U64();
        uint64_t chunk = RefChunk(ref);
        if (chunk >= ix->chunks.size() || RefSlot(ref) >= ix->chunks[chunk].page_count ||
            ix->chunks[chunk].page_size != reg.page_size) {
          return r.Bad(
              name + " page " + std::to_string(k) + ": bad chunk reference " + HexAddr(ref),
              ref_at);
        }
        ix->refs.push_back(ref);
      }
    }
    ix->runs.push_back(run);
  }
  if (total != h.stat_pages || zero != h.stat_zero_pages) {
    return r.Bad("run table disagrees with the header's page counts");
  }
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> EncodeIndex(const Index& ix) {
  Writer w;
  w.U32(kIndexMagic);
  w.U32(static_cast<uint32_t>(ix.parent_path.size()));
  w.U64(0);
  w.Bytes(ix.parent_path.data(), ix.parent_path.size());
  for (const Region& r : ix.regions) {
    w.U64(r.address);
    w.U64(r.length);
    w.U64(r.offset);
    w.U32(r.page_size);
    w.U32(r.prot);
    w.U32(static_cast<uint32_t>(r.kind));
    w.U32(static_cast<uint32_t>(r.name.size()));
    w.Bytes(r.name.data(), r.name.size());
  }
  for (const ChunkEntry& c : ix.chunks) {
    w.U64(c.file_offset);
    w.U32(c.stored_length);
    w.U32(c.page_count);
    w.U32(c.page_size);
    w.U8(c.compression);
    w.U8(0);
    w.U8(0);
    w.U8(0);
    w.U64(c.stored_checksum);
    w.U64(c.raw_checksum);
  }
  for (const Run& run : ix.runs) {
    w.U32(run.region);
    w.U32(static_cast<uint32_t>(run.kind));
    w.U64(run.first_page);
    w.U64(run.count);
    if (run.kind == RunKind::kData) {
      for (uint64_t k = 0; k < run.count; ++k) w.U64(ix.refs[run.ref_index + k]);
    }
  }
  return w.Take();
}

Result<Index> DecodeIndex(const uint8_t* buf, size_t len, const Header& h, const std::string& where,
                          uint64_t* bad_at) {
  Reader r(buf, len, h.index_offset, where, bad_at);
  if (!r.Need(kIndexFixedBytes) || r.U32() != kIndexMagic)
    return r.Bad("bad index magic", h.index_offset);
  Index ix;
  uint32_t parent_len = r.U32();
  r.Skip(8);  // reserved
  if (parent_len > kMaxStringBytes || !r.Need(parent_len)) {
    return r.Bad("bad parent path length " + std::to_string(parent_len));
  }
  ix.parent_path = r.Str(parent_len);
  if (ix.parent_path.find('\0') != std::string::npos ||
      ix.parent_path.empty() != IsNullUuid(h.parent_uuid)) {
    return r.Bad("parent path and parent identity disagree", h.index_offset + 4);
  }
  PW_RETURN_IF_ERROR(DecodeRegions(r, h, &ix));
  PW_RETURN_IF_ERROR(DecodeChunks(r, h, &ix));
  PW_RETURN_IF_ERROR(DecodeRuns(r, h, &ix));
  if (r.left() != 0) return r.Bad(std::to_string(r.left()) + " stray bytes after the runs");
  return ix;
}

}  // namespace pagewise::image
