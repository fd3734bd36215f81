// SnapshotFull / SnapshotIncremental: memory of this process into images.
//
// Both build a list of writer operations (AddPages of populated memory in
// batches, AddZeroPages for unpopulated memory in layers) and run them on
// options.threads threads, then commit. The writer copies each batch into
// its own chunk buffers, so memory is streamed, never copied whole.
#include "pagewise/snapshot.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/page_ranges.h"
#include "image/image_env.h"
#include "snapshot/internal.h"
#include "snapshot/snapshot_env.h"

namespace pagewise {
namespace {

using snapshot_internal::Intersect;
using snapshot_internal::Piece;
using snapshot_internal::PresenceScanner;
using snapshot_internal::Split;

struct Op {
  Piece piece;
  bool zero = false;  // AddZeroPages instead of AddPages
};

// Turns pieces into writer operations. For kAnonymous regions (when asked),
// unpopulated pages become zero ops in a layer, and are left out of a base.
Status PlanOps(const std::vector<Region>& regions, const std::vector<Piece>& pieces, bool layer,
               const SnapshotOptions& options, Env* env, std::vector<Op>* ops,
               SnapshotStats* stats) {
  std::optional<PresenceScanner> scanner;
  std::vector<Piece> data;
  for (const Piece& p : pieces) {
    const Region& reg = regions[p.region];
    const uint64_t page = reg.page_size;
    // Presence scans speak base pages: huge-page regions are read whole.
    if (!options.skip_unpopulated || reg.kind != RegionKind::kAnonymous || page != PageSize()) {
      data.push_back(p);
      continue;
    }
    if (!scanner) scanner = PresenceScanner::Open(env);
    const uint64_t start = reg.address + p.offset, end = start + p.len;
    std::vector<PageRange> populated;
    PW_RETURN_IF_ERROR(scanner->Populated(start, end, &populated));
    uint64_t cursor = start;
    auto hole = [&](uint64_t s, uint64_t e) {
      if (s >= e) return;
      stats->pages_unpopulated += (e - s) / page;
      if (layer) ops->push_back({{p.region, s - reg.address, e - s}, true});
    };
    for (const PageRange& r : populated) {
      hole(cursor, r.start);
      data.push_back({p.region, r.start - reg.address, r.end - r.start});
      cursor = r.end;
    }
    hole(cursor, end);
  }
  for (const Piece& p : data) {
    // Batches are whole pages of the piece's region.
    const uint64_t page = regions[p.region].page_size;
    const uint64_t batch = std::max<uint64_t>(page, options.batch_bytes / page * page);
    for (const Piece& q : Split({p}, batch)) {
      ops->push_back({q, false});
      stats->pages_read += q.len / page;
    }
  }
  return Status::Ok();
}

Result<SnapshotStats> Capture(const std::vector<Region>& regions_in,
                              const std::vector<Piece>* pieces_in, const std::string& parent,
                              const std::string& out_path, const SnapshotOptions& options, Env* env,
                              const char* what) {
  const uint64_t t0 = NowNs();
  PW_RETURN_IF_ERROR(snapshot_internal::ValidateRegions(regions_in, what, env));
  if (options.threads < 1) {
    return Status::InvalidArgument(std::string(what) + ": threads must be >= 1");
  }
  const std::vector<Region> regions = snapshot_internal::NormalizeRegions(regions_in);

  ImageWriteOptions wo;
  wo.compression = options.compression;
  wo.level = options.level;
  wo.parent = parent;
  wo.dedup = options.dedup;
  if (options.chunk_bytes != 0) wo.chunk_bytes = options.chunk_bytes;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> writer, CreateImageWriter(out_path, wo, env));
  for (size_t i = 0; i < regions.size(); ++i) {
    Result<uint32_t> idx = writer->AddRegion(regions[i]);
    if (!idx.ok()) return idx.status().WithContext(std::string(what) + ": " + out_path);
    if (*idx != i) {
      return Status::Internal(std::string(what) + ": writer numbered region " + std::to_string(i) +
                              " as " + std::to_string(*idx));
    }
  }

  std::vector<Piece> whole;
  if (pieces_in == nullptr) {
    for (uint32_t i = 0; i < regions.size(); ++i) whole.push_back({i, 0, regions[i].length});
  }
  const std::vector<Piece>& pieces = pieces_in != nullptr ? *pieces_in : whole;

  SnapshotStats stats;
  std::vector<Op> ops;
  PW_RETURN_IF_ERROR(PlanOps(regions, pieces, !parent.empty(), options, env, &ops, &stats));

  Status s = snapshot_internal::ParallelFor(options.threads, ops.size(), [&](size_t i) {
    const Op& op = ops[i];
    if (op.zero) return writer->AddZeroPages(op.piece.region, op.piece.offset, op.piece.len);
    const char* src = reinterpret_cast<const char*>(regions[op.piece.region].address);
    return writer->AddPages(op.piece.region, op.piece.offset, src + op.piece.offset, op.piece.len);
  });
  if (!s.ok()) return s.WithContext(std::string(what) + ": writing " + out_path);
  PW_RETURN_IF_ERROR(writer->Commit());
  stats.image = writer->stats();
  stats.elapsed_ns = NowNs() - t0;
  return stats;
}

}  // namespace

Result<SnapshotStats> SnapshotFull(const std::vector<Region>& regions, const std::string& out_path,
                                   const SnapshotOptions& options) {
  return SnapshotFull(regions, out_path, options, Env::Default());
}

Result<SnapshotStats> SnapshotFull(const std::vector<Region>& regions, const std::string& out_path,
                                   const SnapshotOptions& options, Env* env) {
  return Capture(regions, nullptr, "", out_path, options, env, "SnapshotFull");
}

Result<SnapshotStats> SnapshotIncremental(const std::vector<PageRange>& written,
                                          const std::vector<Region>& regions,
                                          const std::string& parent_path,
                                          const std::string& out_path,
                                          const SnapshotOptions& options) {
  return SnapshotIncremental(written, regions, parent_path, out_path, options, Env::Default());
}

Result<SnapshotStats> SnapshotIncremental(const std::vector<PageRange>& written,
                                          const std::vector<Region>& regions,
                                          const std::string& parent_path,
                                          const std::string& out_path,
                                          const SnapshotOptions& options, Env* env) {
  if (parent_path.empty()) {
    return Status::InvalidArgument(
        "SnapshotIncremental: parent_path is empty; use SnapshotFull "
        "for a base image");
  }
  const uint64_t page = PageSize();
  for (const PageRange& r : written) {
    if (r.start % page != 0 || r.end % page != 0 || r.end < r.start) {
      return Status::InvalidArgument("SnapshotIncremental: written range [" + HexAddr(r.start) +
                                     ", " + HexAddr(r.end) + ") is not page aligned");
    }
  }
  const std::vector<Piece> pieces = Intersect(Coalesce(written), regions);
  return Capture(regions, &pieces, parent_path, out_path, options, env, "SnapshotIncremental");
}

}  // namespace pagewise
