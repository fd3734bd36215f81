// ChainImage reads: Read, Classify, TopLayerRuns, ReadFlat. Decompressed
// chunks come from the image's shared ChunkCache (chunk_cache.h).
#include <algorithm>
#include <cstring>

#include "base/bytes.h"
#include "image/chain.h"

namespace pagewise::image {
namespace {

// The stored (compressed) bytes of the chunk a thread is loading.
thread_local std::vector<uint8_t> tls_stored;

}  // namespace

Result<ChunkCache::Data> ChainImage::Chunk(uint32_t layer, uint64_t chunk,
                                           ReadPriority priority) const {
  return cache_->Get(layer, chunk, [&](std::vector<uint8_t>* raw) {
    return layers_[layer]->ReadChunk(chunk, raw, &tls_stored, priority);
  });
}

Status ChainImage::CheckRange(uint32_t region, uint64_t offset, uint64_t len) const {
  if (region >= regions_.size()) {
    return Status::InvalidArgument("region " + std::to_string(region) + " does not exist (image " +
                                   layers_.front()->path() + " has " +
                                   std::to_string(regions_.size()) + ")");
  }
  const Region& r = regions_[region];
  if (offset % r.page_size != 0 || len % r.page_size != 0) {
    return Status::InvalidArgument(
        "range [" + HexAddr(offset) + ", +" + HexAddr(len) + ") of region " +
        std::to_string(region) + " is not aligned to its page size " + std::to_string(r.page_size));
  }
  if (offset > r.length || len > r.length - offset) {
    return Status::InvalidArgument("range [" + HexAddr(offset) + ", +" + HexAddr(len) +
                                   ") is outside region " + std::to_string(region) + " (length " +
                                   HexAddr(r.length) + ")");
  }
  return Status::Ok();
}

size_t ChainImage::FindSegment(uint32_t r, uint64_t p) const {
  const auto& segs = resolved_[r];
  // First segment whose end is beyond p.
  return static_cast<size_t>(
      std::partition_point(segs.begin(), segs.end(),
                           [p](const Segment& s) { return s.first + s.count <= p; }) -
      segs.begin());
}

Status ChainImage::Read(uint32_t region, uint64_t offset, void* dst, size_t len) const {
  return ReadWithPriority(region, offset, dst, len, ReadPriority::kDemand);
}

Status ChainImage::ReadWithPriority(uint32_t region, uint64_t offset, void* dst, size_t len,
                                    ReadPriority priority) const {
  PW_RETURN_IF_ERROR(CheckRange(region, offset, len));
  const uint64_t ps = regions_[region].page_size;
  const auto& segs = resolved_[region];
  uint8_t* out = static_cast<uint8_t*>(dst);
  uint64_t p = offset / ps;
  const uint64_t pend = (offset + len) / ps;
  if (remote_) HintRange(region, p, pend, priority);
  size_t si = FindSegment(region, p);
  while (p < pend) {
    if (si >= segs.size() || segs[si].first > p) {
      // Absent in every layer: zero.
      uint64_t stop = si < segs.size() ? std::min(pend, segs[si].first) : pend;
      std::memset(out, 0, (stop - p) * ps);
      out += (stop - p) * ps;
      p = stop;
      continue;
    }
    const Segment& s = segs[si];
    const uint64_t stop = std::min(pend, s.first + s.count);
    const Layer& layer = *layers_[s.layer];
    const Run& run = layer.index().runs[s.run];
    if (run.kind == RunKind::kZero) {
      std::memset(out, 0, (stop - p) * ps);
      out += (stop - p) * ps;
      p = stop;
    } else {
      const uint64_t* refs = layer.index().refs.data() + run.ref_index + s.skip;
      while (p < stop) {
        const uint64_t ref = refs[p - s.first];
        const uint64_t chunk = RefChunk(ref);
        const uint32_t slot = RefSlot(ref);
        // Coalesce pages that sit in consecutive slots of the same chunk.
        uint64_t n = 1;
        // (Same chunk bits: slot + n must not carry into the chunk id.)
        while (p + n < stop && refs[p + n - s.first] == ref + n && RefChunk(ref + n) == chunk) ++n;
        Result<ChunkCache::Data> data = Chunk(s.layer, chunk, priority);
        if (!data.ok()) {
          return data.status().WithContext("reading region " + std::to_string(region) + " offset " +
                                           HexAddr(p * ps));
        }
        std::memcpy(out, (*data)->data() + uint64_t{slot} * ps, n * ps);
        out += n * ps;
        p += n;
      }
    }
    ++si;
  }
  return Status::Ok();
}

Status ChainImage::Classify(uint32_t region, uint64_t offset, size_t len,
                            std::vector<PageSourceKind>* out) const {
  PW_RETURN_IF_ERROR(CheckRange(region, offset, len));
  const uint64_t ps = regions_[region].page_size;
  const auto& segs = resolved_[region];
  uint64_t p = offset / ps;
  const uint64_t pend = (offset + len) / ps;
  out->assign(pend - p, PageSourceKind::kAbsent);
  const uint64_t base = p;
  for (size_t si = FindSegment(region, p); si < segs.size() && segs[si].first < pend; ++si) {
    const Segment& s = segs[si];
    const Run& run = layers_[s.layer]->index().runs[s.run];
    const PageSourceKind k =
        run.kind == RunKind::kZero ? PageSourceKind::kZero : PageSourceKind::kData;
    const uint64_t from = std::max(p, s.first), to = std::min(pend, s.first + s.count);
    std::fill(out->begin() + (from - base), out->begin() + (to - base), k);
  }
  return Status::Ok();
}

Status ChainImage::ClassifyRuns(uint32_t region, uint64_t offset, uint64_t len,
                                std::vector<SourceRun>* out) const {
  PW_RETURN_IF_ERROR(CheckRange(region, offset, len));
  out->clear();
  const uint64_t ps = regions_[region].page_size;
  const auto& segs = resolved_[region];
  const uint64_t pend = (offset + len) / ps;
  auto emit = [&](uint64_t from, uint64_t to, PageSourceKind k) {
    if (from >= to) return;
    if (!out->empty() && out->back().kind == k &&
        out->back().offset + out->back().length == from * ps) {
      out->back().length += (to - from) * ps;
    } else {
      out->push_back({from * ps, (to - from) * ps, k});
    }
  };
  uint64_t p = offset / ps;
  for (size_t si = FindSegment(region, p); si < segs.size() && segs[si].first < pend; ++si) {
    const Segment& s = segs[si];
    emit(p, std::min(s.first, pend), PageSourceKind::kAbsent);
    const Run& run = layers_[s.layer]->index().runs[s.run];
    const uint64_t from = std::max(p, s.first), to = std::min(pend, s.first + s.count);
    emit(from, to, run.kind == RunKind::kZero ? PageSourceKind::kZero : PageSourceKind::kData);
    p = to;
  }
  emit(p, pend, PageSourceKind::kAbsent);
  return Status::Ok();
}

Status ChainImage::TopLayerRuns(uint32_t region,
                                std::vector<std::pair<uint64_t, uint64_t>>* runs) const {
  PW_RETURN_IF_ERROR(CheckRange(region, 0, 0));
  runs->clear();
  const Layer& top = *layers_.front();
  const uint64_t ps = regions_[region].page_size;
  for (size_t k = top.RunsBegin(region); k < top.RunsEnd(region); ++k) {
    const Run& run = top.index().runs[k];
    const uint64_t off = run.first_page * ps, len = run.count * ps;
    if (!runs->empty() && runs->back().first + runs->back().second == off) {
      runs->back().second += len;
    } else {
      runs->emplace_back(off, len);
    }
  }
  return Status::Ok();
}

Status ChainImage::ReadFlat(uint64_t offset, void* dst, size_t len) const {
  return ReadFlatWithPriority(offset, dst, len, ReadPriority::kDemand);
}

Status ChainImage::ReadFlatWithPriority(uint64_t offset, void* dst, size_t len,
                                        ReadPriority priority) const {
  if (!flat_ok_) {
    return Status::FailedPrecondition("image " + layers_.front()->path() +
                                      " has no flat view: its regions overlap at their "
                                      "flat_offset positions");
  }
  if (offset > flat_size_ || len > flat_size_ - offset) {
    return Status::InvalidArgument("flat range [" + HexAddr(offset) + ", +" + HexAddr(len) +
                                   ") is beyond the flat size " + HexAddr(flat_size_));
  }
  uint8_t* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, len);  // gaps between regions read as zero
  std::vector<uint8_t> page;
  const uint64_t end = offset + len;
  for (uint32_t r : flat_order_) {
    const Region& reg = regions_[r];
    const uint64_t rs = reg.offset, re = reg.offset + reg.length;
    const uint64_t from = std::max(offset, rs), to = std::min(end, re);
    if (from >= to) continue;
    const uint64_t ps = reg.page_size;
    // Page-aligned middle straight into dst; partial pages through `page`.
    uint64_t pos = from;
    while (pos < to) {
      const uint64_t in_region = pos - rs;
      const uint64_t page_start = in_region - in_region % ps;
      if (in_region % ps == 0 && to - pos >= ps) {
        const uint64_t n = (to - pos) / ps * ps;
        PW_RETURN_IF_ERROR(ReadWithPriority(r, in_region, out + (pos - offset), n, priority));
        pos += n;
      } else {
        page.resize(ps);
        PW_RETURN_IF_ERROR(ReadWithPriority(r, page_start, page.data(), ps, priority));
        const uint64_t n = std::min(to - pos, page_start + ps - in_region);
        std::memcpy(out + (pos - offset), page.data() + (in_region - page_start), n);
        pos += n;
      }
    }
  }
  return Status::Ok();
}

}  // namespace pagewise::image
