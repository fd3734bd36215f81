// Engine export and adoption for serve handover, and the export's
// encoding: JSON (named fields, so that a newer successor reads an older
// export and ignores what it does not know), page states run-length coded.
#include "restore/engine_handover.h"

#include <nlohmann/json.hpp>

#include "restore/engine.h"

namespace pagewise::restore {
namespace {

using nlohmann::json;

// The counters of RestoreStats that carry over (the latency samples do
// not: the successor starts its own).
// One counter per line (clang-format 14 reflows this macro unstably).
// clang-format off
#define PW_STATS_COUNTERS(X) \
  X(pages_total) \
  X(demand_faults) \
  X(other_faults) \
  X(pages_demand) \
  X(pages_background) \
  X(pages_prefetch) \
  X(prefetch_late_faults) \
  X(zero_pages) \
  X(bytes_copied) \
  X(eexist_pages) \
  X(eagain_retries) \
  X(enoent_pages) \
  X(poisoned_pages) \
  X(forks) \
  X(remaps) \
  X(removes) \
  X(unmaps) \
  X(unknown_events) \
  X(spaces_total) \
  X(spaces_refused) \
  X(prefetch_hit_faults) \
  X(prefetch_waste_entries) \
  X(bytes_demand) \
  X(bytes_readahead) \
  X(bytes_prefetch) \
  X(bytes_background) \
  X(pages_readahead)
// clang-format on

json HistogramJson(const LatencyHistogram& h) {
  json counts = json::array();
  for (uint64_t c : h.counts) counts.push_back(c);
  return {{"counts", counts}, {"count", h.count}, {"sum_ns", h.sum_ns}, {"max_ns", h.max_ns}};
}

void HistogramFrom(const json& j, LatencyHistogram* h) {
  if (!j.is_object()) return;
  const json& c = j.value("counts", json::array());
  for (size_t k = 0; k < c.size() && k < LatencyHistogram::kBuckets; ++k) {
    h->counts[k] = c[k].get<uint64_t>();
  }
  h->count = j.value("count", uint64_t{0});
  h->sum_ns = j.value("sum_ns", uint64_t{0});
  h->max_ns = j.value("max_ns", uint64_t{0});
}

json StatsJson(const RestoreStats& s) {
  json j;
#define PW_PUT(f) j[#f] = s.f;
  PW_STATS_COUNTERS(PW_PUT)
#undef PW_PUT
  j["first_fault_ns"] = s.first_fault_ns;
  j["resident_ns"] = s.resident_ns;
  j["fill_ns"] = s.fill_ns;
  j["latency_zero"] = HistogramJson(s.latency_zero);
  j["latency_demand"] = HistogramJson(s.latency_demand);
  j["latency_prefetch_hit"] = HistogramJson(s.latency_prefetch_hit);
  j["latency_late_prefetch"] = HistogramJson(s.latency_late_prefetch);
  return j;
}

RestoreStats StatsFrom(const json& j) {
  RestoreStats s;
#define PW_GET(f) s.f = j.value(#f, uint64_t{0});
  PW_STATS_COUNTERS(PW_GET)
#undef PW_GET
  s.first_fault_ns = j.value("first_fault_ns", int64_t{-1});
  s.resident_ns = j.value("resident_ns", int64_t{-1});
  s.fill_ns = j.value("fill_ns", uint64_t{0});
  HistogramFrom(j.value("latency_zero", json()), &s.latency_zero);
  HistogramFrom(j.value("latency_demand", json()), &s.latency_demand);
  HistogramFrom(j.value("latency_prefetch_hit", json()), &s.latency_prefetch_hit);
  HistogramFrom(j.value("latency_late_prefetch", json()), &s.latency_late_prefetch);
  return s;
}

#undef PW_STATS_COUNTERS

json MapJson(const SpaceMap& map) {
  json ranges = json::array();
  for (const SpaceMap::RangeView& r : map.Ranges()) {
    json rle = json::array();  // state, count, state, count...
    const std::vector<PageState>& p = *r.pages;
    for (size_t i = 0; i < p.size();) {
      size_t k = i + 1;
      while (k < p.size() && p[k] == p[i]) ++k;
      rle.push_back(static_cast<int>(p[i]));
      rle.push_back(k - i);
      i = k;
    }
    ranges.push_back({{"start", r.start}, {"src", r.src}, {"states", rle}});
  }
  return ranges;
}

Status MapFrom(const json& ranges, size_t page_size, SpaceMap* map) {
  *map = SpaceMap(page_size);
  constexpr uint64_t kMaxPages = uint64_t{1} << 36;  // 256 TiB of 4 KiB pages
  uint64_t total = 0;
  for (const json& r : ranges) {
    const json& rle = r.at("states");
    if (!rle.is_array() || rle.size() % 2 != 0) {
      return Status::Corruption("handover: a page map's states are not (state, count) pairs");
    }
    std::vector<PageState> states;
    for (size_t i = 0; i < rle.size(); i += 2) {
      const int st = rle[i].get<int>();
      const uint64_t n = rle[i + 1].get<uint64_t>();
      if (st < 0 || st > static_cast<int>(PageState::kGone) || n == 0 || n > kMaxPages - total) {
        return Status::Corruption("handover: a page map holds an unknown state or count");
      }
      total += n;
      states.insert(states.end(), n, static_cast<PageState>(st));
    }
    const uint64_t start = r.at("start").get<uint64_t>();
    if (start % page_size != 0) return Status::Corruption("handover: unaligned page map range");
    map->AddWithStates(start, r.at("src").get<uint64_t>(), std::move(states));
  }
  return Status::Ok();
}

json ScheduleJson(const SpaceSchedule& s) {
  return {{"cursor", s.cursor},
          {"prefetch_pos", s.prefetch_pos},
          {"stream_next", s.stream_next},
          {"streak", s.streak},
          {"hints", json(std::vector<uint64_t>(s.hints.begin(), s.hints.end()))}};
}

SpaceSchedule ScheduleFrom(const json& j) {
  SpaceSchedule s;
  s.cursor = j.value("cursor", uint64_t{0});
  s.prefetch_pos = j.value("prefetch_pos", size_t{0});
  s.stream_next = j.value("stream_next", uint64_t{0});
  s.streak = j.value("streak", uint32_t{0});
  for (uint64_t h : j.value("hints", std::vector<uint64_t>{})) {
    if (s.hints.size() < Scheduler::kMaxHints) s.hints.push_back(h);
  }
  return s;
}

}  // namespace

std::string EncodeRestoreStats(const RestoreStats& s) { return StatsJson(s).dump(); }

RestoreStats DecodeRestoreStats(const std::string& bytes) {
  const json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return RestoreStats();
  try {
    return StatsFrom(j);
  } catch (const json::exception&) {
    return RestoreStats();
  }
}

void EngineExport::CloseAll() {
  for (SpaceExport& s : spaces) {
    if (s.uffd >= 0) Env::Default()->Close(s.uffd).IgnoreError();  // dropping our copy
    s.uffd = -1;
  }
}

std::string EncodeEngineExport(const EngineExport& e) {
  json spaces = json::array();
  for (const SpaceExport& s : e.spaces) {
    spaces.push_back(
        {{"features", s.features}, {"map", MapJson(s.map)}, {"sched", ScheduleJson(s.sched)}});
  }
  json trace = json::array();
  for (const TraceEntry& t : e.trace) trace.push_back({t.offset, t.time_ns});
  return json{{"spaces", spaces},
              {"stats", StatsJson(e.stats)},
              {"trace", trace},
              {"prefetch_done", e.prefetch_done},
              {"start_ns", e.start_ns}}
      .dump();
}

Result<EngineExport> DecodeEngineExport(const std::string& bytes, size_t page_size) {
  const json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Corruption("handover: an engine's state is not JSON");
  EngineExport e;
  try {
    for (const json& s : j.at("spaces")) {
      SpaceExport sp;
      sp.features = s.value("features", uint64_t{0});
      PW_RETURN_IF_ERROR(MapFrom(s.at("map"), page_size, &sp.map));
      sp.sched = ScheduleFrom(s.value("sched", json::object()));
      e.spaces.push_back(std::move(sp));
    }
    e.stats = StatsFrom(j.value("stats", json::object()));
    for (const json& t : j.value("trace", json::array())) {
      e.trace.push_back({t.at(0).get<uint64_t>(), t.at(1).get<uint64_t>()});
    }
    e.prefetch_done = j.value("prefetch_done", false);
    e.start_ns = j.value("start_ns", int64_t{0});
  } catch (const json::exception& ex) {
    return Status::Corruption(std::string("handover: malformed engine state: ") + ex.what());
  }
  return e;
}

// ---- Engine ---------------------------------------------------------------

Result<EngineExport> Engine::Export() {
  if (opt_.private_fd_table) {
    return Status::FailedPrecondition("an in-process restore cannot be handed over");
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!started_ || finished_) {
      return Status::FailedPrecondition("the engine is not serving: nothing to hand over");
    }
    keep_uffds_ = true;  // the loop thread leaves them open as it exits
    stopping_ = true;
  }
  cv_.notify_all();
  fork_.Shutdown();
  Notify();
  if (server_ != nullptr && server_->joinable()) server_->join();
  if (filler_ != nullptr && filler_->joinable()) filler_->join();
  server_.reset();
  filler_.reset();
  // No engine thread runs now: nothing is in flight, every message read is
  // applied. Faults read but not served: wake their threads, which fault
  // again (to the successor) if their page is still missing.
  EngineExport out;
  for (const SpacePtr& s : SnapshotSpaces()) {
    std::lock_guard<std::mutex> lk(s->mu);
    if (!s->uffd.valid()) continue;
    if (s->dead) {
      s->uffd = sys::Userfaultfd();  // the mm is gone: nothing to hand over
      continue;
    }
    for (const QueuedFault& f : s->faults) {
      s->uffd.Wake(f.event.address & ~static_cast<uint64_t>(page_size_ - 1), page_size_)
          .IgnoreError();  // the thread may be gone: harmless
    }
    s->faults.clear();
    SpaceExport e;
    e.features = s->uffd.features();
    e.uffd = s->uffd.Release();
    e.map = s->map;
    e.sched = s->sched;
    s->closed.store(true);
    out.spaces.push_back(std::move(e));
  }
  out.stats = Stats();
  out.stats.fault_latency_ns.clear();
  out.stats.fault_time_ns.clear();
  out.trace = stats_.TraceEntries();
  {
    std::lock_guard<std::mutex> lk(mu_);
    out.prefetch_done = prefetch_done_;
  }
  out.start_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(stats_.start().time_since_epoch())
          .count();
  return out;
}

void Engine::Adopt(EngineExport state) {
  for (SpaceExport& e : state.spaces) {
    auto s = std::make_shared<Space>();
    s->uffd = sys::Userfaultfd::Adopt(Relocate(e.uffd), e.features, env_);
    e.uffd = -1;
    s->map = std::move(e.map);
    s->sched = std::move(e.sched);
    s->Sync();
    std::lock_guard<std::mutex> lk(mu_);
    s->id = next_id_++;
    spaces_.push_back(std::move(s));
  }
  stats_.Seed(state.stats, std::move(state.trace));
  stats_.SetStart(Clock::time_point(std::chrono::nanoseconds(state.start_ns)));
  adopted_ = true;
  std::lock_guard<std::mutex> lk(mu_);
  prefetch_done_ = state.prefetch_done;
}

}  // namespace pagewise::restore
