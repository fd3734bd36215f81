// What an engine hands over when its server is replaced (serve handover):
// every live space's userfaultfd with its page map and scheduling state,
// and the books (stats, trace, prefetch progress), so that another engine
// (in another process) continues exactly where this one stopped.
//
// Why this is safe: the engine exports only after its threads stopped, so
// no fill is in flight and every message it read is applied (events) or
// answered (queued faults are woken: their threads retry and fault again
// to the successor). Messages not read yet stay in the kernel's queue for
// the successor. The successor must serve the same source (the handover
// protocol checks it).
//
// Thread safety: plain values; an EngineExport owns its descriptors until
// they are released (moved into an engine, or sent away and closed).
#ifndef PAGEWISE_RESTORE_ENGINE_HANDOVER_H_
#define PAGEWISE_RESTORE_ENGINE_HANDOVER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "pagewise/restore.h"
#include "pagewise/status.h"
#include "restore/engine_schedule.h"
#include "restore/space_map.h"

namespace pagewise::restore {

struct SpaceExport {
  int uffd = -1;  // owned (closed by EngineExport::CloseAll unless moved out)
  uint64_t features = 0;
  SpaceMap map;
  SpaceSchedule sched;
};

struct EngineExport {
  std::vector<SpaceExport> spaces;
  RestoreStats stats;             // the books so far (latency samples dropped)
  std::vector<TraceEntry> trace;  // record_trace
  bool prefetch_done = false;     // the prefetch list was installed (ready sent)
  int64_t start_ns = 0;           // the restore's start, CLOCK_MONOTONIC
  // Closes every descriptor still held.
  void CloseAll();
};

// A self-contained encoding of the parts without descriptors (maps,
// schedules, books). Decode validates every count against the bytes
// present (the peer is another process: never trusted blindly) and
// returns kCorruption naming what is wrong; descriptors are attached by
// the caller in space order.
std::string EncodeEngineExport(const EngineExport& e);
Result<EngineExport> DecodeEngineExport(const std::string& bytes, size_t page_size);
// A client's books alone (counters and histograms, no samples); decoding
// something malformed gives empty books.
std::string EncodeRestoreStats(const RestoreStats& s);
RestoreStats DecodeRestoreStats(const std::string& bytes);

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_HANDOVER_H_
