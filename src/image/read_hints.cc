// ChainImage's fetch hints for remote layers: which chunks a read, a
// sequential read's next stretch, or a working-set trace will need, handed
// to each layer's ChunkSource so that it fetches them in parallel before
// the reads block on them one by one. Local layers never get here
// (remote_ is false).
#include <algorithm>

#include "image/chain.h"

namespace pagewise::image {
namespace {

// Pages of read-ahead once reads of a region are sequential: 2 MiB for
// demand reads (hinted at prefetch priority), 4 MiB for background fill.
constexpr uint64_t kDemandAheadBytes = 2u << 20;
constexpr uint64_t kFillAheadBytes = 4u << 20;
// A read that starts within this many pages of where the last one ended
// continues a sequential stream; this many such reads in a row make it one.
constexpr uint64_t kSequentialSlackPages = 64;
constexpr uint32_t kSequentialReads = 4;

// Collects chunk ids per layer, dropping immediate repeats (pages in
// consecutive slots of one chunk); the source drops the rest.
struct Wanted {
  std::vector<std::vector<uint64_t>> ids;  // per layer
  void Add(uint32_t layer, uint64_t chunk) {
    auto& v = ids[layer];
    if (v.empty() || v.back() != chunk) v.push_back(chunk);
  }
};

}  // namespace

void ChainImage::HintPages(uint32_t region, uint64_t p, uint64_t pend, ReadPriority priority,
                           bool skip_first) const {
  Wanted w;
  w.ids.resize(layers_.size());
  int64_t first_layer = -1;
  uint64_t first_chunk = 0;
  const auto& segs = resolved_[region];
  for (size_t si = FindSegment(region, p); si < segs.size() && segs[si].first < pend; ++si) {
    const Segment& s = segs[si];
    const Layer& layer = *layers_[s.layer];
    const Run& run = layer.index().runs[s.run];
    if (run.kind != RunKind::kData || !layer.source().remote()) continue;
    const uint64_t* refs = layer.index().refs.data() + run.ref_index + s.skip;
    const uint64_t from = std::max(p, s.first), to = std::min(pend, s.first + s.count);
    for (uint64_t q = from; q < to; ++q) {
      const uint64_t chunk = RefChunk(refs[q - s.first]);
      if (first_layer < 0) {
        first_layer = s.layer;
        first_chunk = chunk;
        if (skip_first) continue;
      } else if (skip_first && first_layer == s.layer && first_chunk == chunk) {
        continue;
      }
      w.Add(s.layer, chunk);
    }
  }
  for (uint32_t l = 0; l < layers_.size(); ++l) {
    if (!w.ids[l].empty())
      layers_[l]->source().WillRead(w.ids[l].data(), w.ids[l].size(), priority);
  }
}

void ChainImage::HintRange(uint32_t region, uint64_t p, uint64_t pend,
                           ReadPriority priority) const {
  // The chunks of this read itself, so that a read spanning several chunks
  // fetches them all at once - except the first, which the read itself asks
  // for right away (a hint for it would only queue it twice).
  if (pend - p > 1) HintPages(region, p, pend, priority, /*skip_first=*/true);
  const uint64_t last = last_end_[region].exchange(pend, std::memory_order_relaxed);
  const bool sequential =
      last != 0 && p + kSequentialSlackPages >= last && p <= last + kSequentialSlackPages;
  // Read ahead once a stream is clearly sequential: kSequentialReads reads
  // in a row (a short cluster of faults is not a stream).
  const uint32_t run = sequential ? seq_reads_[region].fetch_add(1, std::memory_order_relaxed) + 1
                                  : (seq_reads_[region].store(0, std::memory_order_relaxed), 0);
  if (run < kSequentialReads) return;
  const uint64_t ps = regions_[region].page_size;
  const uint64_t pages = regions_[region].length / ps;
  const bool fill = priority == ReadPriority::kBackground;
  const uint64_t ahead = (fill ? kFillAheadBytes : kDemandAheadBytes) / ps;
  if (pend >= pages) return;
  const uint64_t to = std::min(pages, pend + ahead);
  // Each read of a stream moves the window by a few pages: hint only what
  // the last hint of this stream did not cover (hinting all of it again
  // per read cost more CPU than the reads). A window that does not
  // overlap (the stream jumped) is hinted whole.
  std::atomic<uint64_t>& hinted = ahead_end_[2 * size_t{region} + (fill ? 1 : 0)];
  const uint64_t done = hinted.exchange(to, std::memory_order_relaxed);
  const uint64_t from = done > pend && done <= to ? done : pend;
  if (from >= to) return;
  HintPages(region, from, to,
            priority == ReadPriority::kDemand ? ReadPriority::kPrefetch : priority);
}

void ChainImage::WillNeedFlat(const std::vector<uint64_t>& offsets, ReadPriority priority) const {
  if (!remote_ || !flat_ok_) return;
  Wanted w;
  w.ids.resize(layers_.size());
  for (uint64_t off : offsets) {
    // The region holding `off` (regions sorted by offset, disjoint).
    auto it = std::upper_bound(flat_order_.begin(), flat_order_.end(), off,
                               [&](uint64_t o, uint32_t r) { return o < regions_[r].offset; });
    if (it == flat_order_.begin()) continue;
    const uint32_t r = *(it - 1);
    const Region& reg = regions_[r];
    if (off - reg.offset >= reg.length) continue;  // in a gap
    const uint64_t page = (off - reg.offset) / reg.page_size;
    const auto& segs = resolved_[r];
    const size_t si = FindSegment(r, page);
    if (si >= segs.size() || segs[si].first > page) continue;  // absent
    const Segment& s = segs[si];
    const Layer& layer = *layers_[s.layer];
    const Run& run = layer.index().runs[s.run];
    if (run.kind != RunKind::kData || !layer.source().remote()) continue;
    w.Add(s.layer, RefChunk(layer.index().refs[run.ref_index + s.skip + (page - s.first)]));
  }
  for (uint32_t l = 0; l < layers_.size(); ++l) {
    if (!w.ids[l].empty())
      layers_[l]->source().WillRead(w.ids[l].data(), w.ids[l].size(), priority);
  }
}

}  // namespace pagewise::image
