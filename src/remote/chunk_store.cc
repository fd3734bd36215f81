// ChunkStore: memory tier, single flight, disk cache, cross-process claims,
// verified network fetches, hint workers.
#include "remote/chunk_store.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "image/format.h"
#include "remote/aws_config.h"

namespace pagewise::remote {
namespace {

std::mutex g_registry_mu;
std::map<std::string, std::weak_ptr<ChunkStore>>* g_registry =
    new std::map<std::string, std::weak_ptr<ChunkStore>>();  // never destroyed

std::string RegistryKey(const ChunkStore::Options& o) {
  return o.cache_dir + "|" + std::to_string(o.cache_bytes) + "|" + std::to_string(o.memory_bytes) +
         "|" + std::to_string(o.connections) + "|" + std::to_string(o.timeout.count()) + "|" +
         std::to_string(o.connect_timeout.count()) + "|" + (o.cache_reads ? "r" : "-");
}

}  // namespace

Result<std::shared_ptr<ChunkStore>> ChunkStore::Shared(const RemoteOptions& remote) {
  return Shared(OptionsFor(remote));
}

ChunkStore::Options ChunkStore::OptionsFor(const RemoteOptions& remote) {
  const EnvLookup env = ProcessEnvironment();
  Options o;
  o.cache_dir = remote.cache_dir.empty() ? DefaultCacheDir(env) : remote.cache_dir;
  o.cache_bytes = remote.cache_bytes != 0 ? remote.cache_bytes : DefaultCacheBytes(env);
  o.memory_bytes = remote.memory_cache_bytes;
  o.connections = std::clamp(remote.connections, 1, 64);
  o.timeout = remote.timeout.count() > 0 ? remote.timeout : DefaultTimeout(env);
  o.connect_timeout = remote.connect_timeout;
  o.cache_reads = remote.cache_reads;
  return o;
}

Result<std::shared_ptr<ChunkStore>> ChunkStore::Shared(const Options& o) {
  const std::string key = RegistryKey(o);
  std::lock_guard<std::mutex> lk(g_registry_mu);
  auto it = g_registry->find(key);
  if (it != g_registry->end()) {
    if (std::shared_ptr<ChunkStore> s = it->second.lock()) return s;
  }
  PW_ASSIGN_OR_RETURN(std::shared_ptr<ChunkStore> s, Create(o));
  (*g_registry)[key] = s;
  return s;
}

Result<std::shared_ptr<ChunkStore>> ChunkStore::Create(const Options& options) {
  std::shared_ptr<ChunkStore> s(new ChunkStore(options));
  HttpEngine::Options ho;
  ho.connections = options.connections;
  ho.reserved_for_demand = options.connections >= 4 ? 2 : (options.connections >= 2 ? 1 : 0);
  ho.connect_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(options.connect_timeout);
  PW_ASSIGN_OR_RETURN(s->http_, HttpEngine::Create(ho));
  if (!options.cache_dir.empty()) {
    PW_ASSIGN_OR_RETURN(s->disk_, DiskCache::Open(options.cache_dir, options.cache_bytes));
  }
  // Here, on the opener's thread, never later on whichever thread reads or
  // hints first (a restore engine's, in its private fd table): see
  // "Descriptors" in the header.
  const int general = std::max(1, options.connections - 2);
  const int demand = options.connections >= 4 ? 2 : 1;
  ChunkStore* raw = s.get();
  for (int i = 0; i < demand + general; ++i) {
    const bool demand_only = i < demand;
    s->workers_.emplace_back([raw, demand_only] { raw->WorkerLoop(demand_only); });
  }
  return s;
}

ChunkStore::~ChunkStore() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cancel_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

std::shared_ptr<const std::vector<uint8_t>> ChunkStore::MemoryGetLocked(const std::string& key) {
  auto it = memory_.find(key);
  if (it == memory_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.pos);
  return it->second.data;
}

void ChunkStore::MemoryPutLocked(const std::string& key,
                                 std::shared_ptr<const std::vector<uint8_t>> v) {
  if (opt_.memory_bytes == 0 || v->size() > opt_.memory_bytes / 4) return;
  auto it = memory_.find(key);
  if (it != memory_.end()) {
    memory_used_ -= it->second.data->size();
    lru_.erase(it->second.pos);
    memory_.erase(it);
  }
  lru_.push_front(key);
  memory_used_ += v->size();
  memory_[key] = {std::move(v), lru_.begin()};
  while (memory_used_ > opt_.memory_bytes && !lru_.empty()) {
    auto victim = memory_.find(lru_.back());
    memory_used_ -= victim->second.data->size();
    memory_.erase(victim);
    lru_.pop_back();
  }
}

void ChunkStore::DropMemory() {
  std::lock_guard<std::mutex> lk(mu_);
  memory_.clear();
  lru_.clear();
  memory_used_ = 0;
}

void ChunkStore::FinishLocked(const FlightPtr& f, Status st, std::vector<uint8_t>&& bytes) {
  f->state = State::kDone;
  f->result = std::move(st);
  if (f->result.ok()) {
    f->data = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    MemoryPutLocked(f->loc.cache_key, f->data);
  }
  auto it = flights_.find(f->loc.cache_key);
  if (it != flights_.end() && it->second == f) flights_.erase(it);
  f->cv.notify_all();
}

Status ChunkStore::Read(const ChunkLocation& loc, uint8_t* dst, ReadPriority priority) {
  std::unique_lock<std::mutex> lk(mu_);
  if (opt_.cache_reads) {
    if (auto m = MemoryGetLocked(loc.cache_key)) {
      stats_.memory_hits++;
      std::memcpy(dst, m->data(), loc.length);
      return Status::Ok();
    }
  }
  // The fetch itself runs on the store's threads (see "Descriptors" in the
  // header); a demand read goes to threads that take demand reads only.
  const int q = std::clamp(static_cast<int>(priority), 0, 2);
  for (bool retried = false;; retried = true) {
    FlightPtr f;
    bool was_running = false;
    auto it = flights_.find(loc.cache_key);
    if (it == flights_.end()) {
      f = std::make_shared<Flight>();
      f->loc = loc;
      f->priority = priority;
      flights_[loc.cache_key] = f;
      queues_[q].push_back(f);
      work_cv_.notify_all();
    } else {
      f = it->second;
      was_running = f->state == State::kRunning;
      if (was_running) {
        stats_.joined++;  // someone in this process is fetching it: wait for that fetch
      } else if (priority < f->priority) {
        f->priority = priority;  // queued by a hint: move it up; the old entry is skipped
        queues_[q].push_back(f);
        work_cv_.notify_all();
      }
    }
    f->cv.wait(lk, [&] { return f->state == State::kDone; });
    if (f->result.ok()) {
      std::memcpy(dst, f->data->data(), loc.length);
      return Status::Ok();
    }
    // A fetch that was already running gave up (an outage it started in):
    // that says nothing about now: fetch again, once, with a deadline of
    // our own. Missing, damaged and forbidden objects stay what they are.
    const Code c = f->result.code();
    if (!was_running || retried || c == Code::kNotFound || c == Code::kCorruption ||
        c == Code::kPermissionDenied) {
      return f->result;
    }
  }
}

void ChunkStore::Hint(std::vector<ChunkLocation> locs, ReadPriority priority) {
  const int q = static_cast<int>(priority);
  size_t queued = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return;
    stats_.hinted += locs.size();
    for (ChunkLocation& loc : locs) {
      if (opt_.cache_reads && memory_.count(loc.cache_key)) continue;
      auto it = flights_.find(loc.cache_key);
      if (it != flights_.end()) {
        FlightPtr& f = it->second;
        if (f->state == State::kQueued && priority < f->priority) {
          f->priority = priority;
          queues_[q].push_back(f);  // its old queue entry is skipped later
          queued++;
        }
        continue;
      }
      auto f = std::make_shared<Flight>();
      f->priority = priority;
      const std::string key = loc.cache_key;
      f->loc = std::move(loc);
      flights_[key] = f;
      queues_[q].push_back(std::move(f));
      queued++;
    }
  }
  // Workers are woken only for new work. Reads hint the same chunks again
  // and again (every read of a sequential stream hints the stretch ahead),
  // and waking every worker for nothing cost the restore's own threads
  // their CPU (on 2 cores, a demand read's handoff waited behind them).
  // All of them: a demand-only worker would not take a prefetch.
  if (queued > 0) work_cv_.notify_all();
}

void ChunkStore::WorkerLoop(bool demand_only) {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    // Stopping: nobody reads any more (readers hold the store); queued
    // hints are dropped.
    if (stop_) return;
    FlightPtr f;
    for (int i = 0; i < (demand_only ? 1 : 3) && !f; ++i) {
      std::deque<FlightPtr>& q = queues_[i];
      while (!q.empty() && q.front()->state != State::kQueued) q.pop_front();
      if (!q.empty()) {
        f = std::move(q.front());
        q.pop_front();
      }
    }
    if (!f) {
      work_cv_.wait(lk);
      continue;
    }
    f->state = State::kRunning;
    const ChunkLocation loc = f->loc;
    const ReadPriority priority = f->priority;
    lk.unlock();
    std::vector<uint8_t> bytes;
    Status st = Fetch(loc, &bytes, priority);
    lk.lock();
    FinishLocked(f, st, std::move(bytes));
  }
}

Status ChunkStore::Fetch(const ChunkLocation& loc, std::vector<uint8_t>* out,
                         ReadPriority priority) {
  const Deadline deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(opt_.timeout);
  out->resize(loc.length);
  bool damaged = false;
  auto disk_hit = [&]() -> bool {
    if (!disk_ || !opt_.cache_reads) return false;
    Result<bool> hit = disk_->Get(loc.cache_key, out->data(), loc.length, loc.checksum, &damaged);
    if (damaged) {
      std::lock_guard<std::mutex> lk(mu_);
      stats_.damaged_cache++;
    }
    return hit.ok() && *hit;
  };
  if (disk_hit()) {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.disk_hits++;
    return Status::Ok();
  }
  bool claimed = false;
  if (disk_) {
    // Another process may be fetching this chunk: wait for its entry rather
    // than fetch it twice (bounded by the timeout; then fetch anyway).
    auto pause = std::chrono::microseconds(500);
    while (true) {
      Result<bool> c = disk_->TryClaim(loc.cache_key);
      claimed = !c.ok() || *c;  // a lock error: fetch without coordination
      if (claimed || Clock::now() >= deadline || cancel_.load()) break;
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(20));
      if (disk_hit()) {
        std::lock_guard<std::mutex> lk(mu_);
        stats_.waited_for_peer++;
        return Status::Ok();
      }
    }
    if (claimed && disk_hit()) {  // it finished just before we claimed
      disk_->Release(loc.cache_key);
      std::lock_guard<std::mutex> lk(mu_);
      stats_.waited_for_peer++;
      return Status::Ok();
    }
  }
  Status st = FetchNetwork(loc, out, priority, deadline);
  if (st.ok() && disk_) {
    // A cache that cannot take the entry (full disk) costs a refetch later,
    // not this read.
    disk_->Put(loc.cache_key, out->data(), loc.length).IgnoreError();
  }
  if (claimed && disk_) disk_->Release(loc.cache_key);
  return st;
}

Status ChunkStore::FetchNetwork(const ChunkLocation& loc, std::vector<uint8_t>* out,
                                ReadPriority priority, Deadline deadline) {
  Status st;
  std::string what;
  if (loc.s3 != nullptr) {
    what = "object " + loc.s3->Describe(loc.bucket, loc.key);
    st = loc.s3->GetRange(loc.bucket, loc.key, 0, loc.length, out->data(), priority, deadline,
                          &cancel_);
  } else {
    what = "bytes [" + std::to_string(loc.offset) + ", +" + std::to_string(loc.length) + ") of " +
           loc.url;
    auto build = [&] {
      HttpRequest r;
      r.url = loc.url;
      r.headers = {{"Range", "bytes=" + std::to_string(loc.offset) + "-" +
                                 std::to_string(loc.offset + loc.length - 1)}};
      r.sink = out->data();
      r.sink_len = loc.length;
      r.priority = priority;
      return r;
    };
    Result<HttpResponse> r = PerformWithRetries(
        http_.get(), build,
        [&](const HttpResponse& resp, bool* transient) {
          return CheckRangeReply(resp, loc.offset, loc.length, "GET " + what, transient);
        },
        deadline, "GET " + what, &cancel_);
    st = r.ok() ? Status::Ok() : r.status();
  }
  if (!st.ok()) return st;
  if (loc.has_sha256) {
    const Sha256Digest got = Sha256(out->data(), loc.length);
    if (got != loc.sha256) {
      std::lock_guard<std::mutex> lk(mu_);
      stats_.bad_objects++;
      return Status::Corruption(what + ": its bytes hash to " + HexLower(got) +
                                ", not the content address " + HexLower(loc.sha256) +
                                ": the object is damaged in the bucket; push the image again");
    }
  } else if (image::Checksum64(out->data(), loc.length) != loc.checksum) {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.bad_objects++;
    return Status::Corruption(what +
                              ": checksum mismatch: the file behind the URL changed or is "
                              "damaged");
  }
  std::lock_guard<std::mutex> lk(mu_);
  stats_.fetched++;
  stats_.fetched_bytes += loc.length;
  return Status::Ok();
}

ChunkStore::Stats ChunkStore::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

}  // namespace pagewise::remote
