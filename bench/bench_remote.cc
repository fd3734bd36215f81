// `pagewise bench remote [--endpoint URL]`: images in S3. Against a real S3
// server (its own throw-away RADOS Gateway unless --endpoint is given):
//   push          mb_per_s of pushing a snapshot, beside one big object PUT of
//                 the same bytes (the server's own ingest rate);
//   push_layer    uploaded_fraction: bytes the push of a second snapshot of a
//                 running workload (<= 10% of its pages written since the
//                 first) uploads / that snapshot's flat size, beside the
//                 same fraction for pushing the first, full, snapshot;
//   s3_cold, s3_cold_prefetch, s3_warm: a lazy restore from s3:// with an
//                 empty chunk cache, with an empty cache and the working
//                 set's trace as prefetch list, and with the chunks in the
//                 host cache (a fresh process: empty memory tier); each
//                 first_access_ms, working_set_ms (the program has touched
//                 its working set), resident_ms, fault_p99_us beside the
//                 same restore from the local image file (local_image);
//   s3_warm_memory: s3_warm while another image of the same store keeps
//                 the memory tier hot, beside s3_warm (does the tier pay?).
// Times include opening the image (a manifest GET for s3://). Every restored
// byte is compared with the snapshot; a wrong byte fails the benchmark.
// Restore figures are medians of three rounds, local and s3 alternating.
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "bench.h"
#include "pagewise/image.h"
#include "pagewise/remote.h"
#include "pagewise/restore.h"
#include "pagewise/snapshot.h"
#include "remote/remote_image.h"
#include "rgw_server.h"
#include "sys/env.h"
#include "sys/process.h"

namespace pagewise::bench {
namespace {

const size_t kPage = PageSize();
constexpr int kRounds = 3;
// Chunks of 512 KiB (uncompressed), the unit AWS Lambda stores snapshots in:
// an object request costs the same whatever its size up to a few hundred
// KiB, so fewer, larger chunks fetch a working set in fewer round trips.
// The local baseline reads the same image.
constexpr uint32_t kChunkBytes = 512 * 1024;

// Snapshot-like content: 35% zero pages, 25% copies of 32 template pages,
// 40% random (incompressible) pages.
void Fill(char* p, size_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> templ(32 * kPage / 8);
  for (auto& w : templ) w = rng();
  for (size_t off = 0; off < len; off += kPage) {
    const uint64_t r = rng() % 20;
    if (r < 7) {
      std::memset(p + off, 0, kPage);
    } else if (r < 12) {
      std::memcpy(p + off, reinterpret_cast<const char*>(templ.data()) + (rng() % 32) * kPage,
                  kPage);
    } else {
      for (size_t i = 0; i < kPage; i += 8) {
        const uint64_t w = rng();
        std::memcpy(p + off + i, &w, 8);
      }
    }
  }
}

// A working set: 5% of the pages in 64 clusters.
std::vector<size_t> WorkingSet(size_t pages, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const size_t per = std::max<size_t>(1, pages / 20 / 64);
  std::vector<size_t> out;
  for (int c = 0; c < 64; ++c) {
    const size_t start = rng() % (pages - per);
    for (size_t i = 0; i < per; ++i) out.push_back(start + i);
  }
  return out;
}

struct Mapping {
  char* p = nullptr;
  size_t len = 0;
  explicit Mapping(size_t n) : len(n) {
    Result<void*> m = Env::Default()->Mmap(nullptr, n, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p = m.ok() ? static_cast<char*>(*m) : nullptr;
  }
  ~Mapping() {
    // Anonymous memory of this bench: an unmap error loses nothing.
    if (p != nullptr) Env::Default()->Munmap(p, len).IgnoreError();
  }
};

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

struct Measured {
  double first_ms = 0, ws_ms = 0, resident_ms = 0, p99_us = 0;
  WorkingSetTrace trace;
};

struct RestoreCase {
  std::string name;  // local path or s3:// URL
  RemoteOptions remote;
  std::vector<uint64_t> prefetch;
  bool record = false;  // record the trace (background fill off)
};

// Opens `c.name`, restores it lazily, touches `order`, waits until resident
// and compares every byte with `expect`.
Result<Measured> RestoreOnce(const RestoreCase& c, size_t len, const std::vector<size_t>& order,
                             const char* expect) {
  Measured m;
  const uint64_t t0 = NowNs();
  ImageOpenOptions oo;
  oo.remote = c.remote;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(c.name, oo));
  std::shared_ptr<PageSource> src = ImageSource(std::shared_ptr<const Image>(std::move(img)));
  RestoreOptions ro;
  ro.fill.prefetch = c.prefetch;
  ro.fill.record_trace = c.record;
  ro.fill.background_fill = !c.record;
  ro.fill.max_latency_samples = 1 << 20;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<LazyRestore> r, LazyRestore::Start(src, {{0, len, 0}}, ro));
  char* p = r->data(0);
  for (size_t i = 0; i < order.size(); ++i) {
    (void)*reinterpret_cast<const volatile uint64_t*>(p + order[i] * kPage + 64);
    if (i == 0) m.first_ms = Ms(NowNs() - t0);
  }
  m.ws_ms = Ms(NowNs() - t0);
  Status st = r->Finish();
  m.resident_ms = Ms(NowNs() - t0);
  const RestoreStats stats = r->stats();
  m.p99_us = static_cast<double>(stats.fault_latency_p99_ns) / 1e3;
  m.trace = r->trace();
  const bool same = st.ok() && std::memcmp(p, expect, len) == 0;
  r.reset();  // unmaps the restored memory
  PW_RETURN_IF_ERROR(st);
  if (!same) {
    return Status::Corruption("bench remote: restored memory differs from the snapshot (" + c.name +
                              ")");
  }
  return m;
}

// Medians of several rounds, per metric.
struct Rounds {
  std::vector<double> first, ws, resident, p99;
  void Add(const Measured& m) {
    first.push_back(m.first_ms);
    ws.push_back(m.ws_ms);
    resident.push_back(m.resident_ms);
    p99.push_back(m.p99_us);
  }
};

void Report(BenchReport* report, const std::string& subject, const Rounds& s, const Rounds& base,
            const std::string& baseline) {
  report->Add({subject, "first_access_ms", Median(s.first), "ms", baseline, Median(base.first)});
  report->Add({subject, "working_set_ms", Median(s.ws), "ms", baseline, Median(base.ws)});
  report->Add({subject, "resident_ms", Median(s.resident), "ms", baseline, Median(base.resident)});
  report->Add({subject, "fault_p99_us", Median(s.p99), "us", baseline, Median(base.p99)});
}

// The S3 side: a server (ours unless an endpoint is given), a bucket, a client.
struct S3Side {
  std::unique_ptr<RgwServer> rgw;
  RemoteOptions remote;
  std::shared_ptr<remote::S3Client> s3;
  std::string bucket;
  std::string Url(const std::string& name) const { return "s3://" + bucket + "/" + name; }
};

Status SetUpS3(const BenchOptions& opts, S3Side* side) {
  if (opts.endpoint.empty()) {
    Progress(opts, "remote: starting a RADOS Gateway");
    PW_ASSIGN_OR_RETURN(side->rgw, RgwServer::Start());
    side->rgw->ExportEnvironment();
    side->remote.endpoint = side->rgw->endpoint();
  } else {
    side->remote.endpoint = opts.endpoint;
  }
  remote::ChunkStore::Options so = remote::ChunkStore::OptionsFor(side->remote);
  so.cache_dir.clear();
  PW_ASSIGN_OR_RETURN(std::shared_ptr<remote::ChunkStore> store, remote::ChunkStore::Create(so));
  PW_ASSIGN_OR_RETURN(side->s3, remote::MakeS3Client(side->remote, store));
  side->bucket = "pagewise-bench-" + std::to_string(std::random_device{}() % 1000000000);
  return side->s3->CreateBucket(side->bucket, remote::Clock::now() + std::chrono::seconds(60));
}

// Two snapshots of a running workload: a base, then (while a writer thread
// rewrites 8% of the pages, in clusters) a layer on top of it.
Status Snapshots(const std::string& dir, char* mem, size_t len, std::string* base,
                 std::string* layer) {
  *base = dir + "/base.pwimg";
  *layer = dir + "/layer.pwimg";
  SnapshotChainOptions co;
  co.snapshot.chunk_bytes = kChunkBytes;
  PW_ASSIGN_OR_RETURN(
      std::unique_ptr<SnapshotChain> chain,
      SnapshotChain::Create(
          {MakeRegion(mem, len, RegionKind::kAnonymous, PROT_READ | PROT_WRITE, "bench")}, co));
  PW_RETURN_IF_ERROR(chain->Base(*base).status());
  std::thread writer([&] {
    std::mt19937_64 rng(77);
    const size_t pages = len / kPage, clusters = std::max<size_t>(1, pages * 8 / 100 / 8);
    for (size_t c = 0; c < clusters; ++c) {
      const size_t start = rng() % (pages - 8);
      for (size_t p = start; p < start + 8; ++p) {
        for (size_t i = 0; i < kPage; i += 8) {
          const uint64_t w = rng();
          std::memcpy(mem + p * kPage + i, &w, 8);
        }
      }
    }
  });
  writer.join();
  return chain->Layer(*layer).status();
}

// One function on purpose (longer than our ~80 lines): the protocol, from
// the push through the cold, warm and prefetch restores against the local
// baseline, sharing the server, the bucket and the local image.
Status RunRemoteBench(const BenchOptions& opts, BenchReport* report) {
  const size_t len = std::max<size_t>(
      256 * kPage,
      static_cast<size_t>(static_cast<double>(256ull << 20) * opts.scale) / kPage * kPage);
  const size_t pages = len / kPage;
  PW_ASSIGN_OR_RETURN(const std::string dir, sys::MakeTempDir("/tmp/pagewise-bench-remote-"));
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  S3Side side;
  PW_RETURN_IF_ERROR(SetUpS3(opts, &side));

  Progress(opts, "remote: content and two snapshots");
  Mapping mem(len), expect(len);
  if (mem.p == nullptr || expect.p == nullptr) return Status(Code::kResourceExhausted, 0, "mmap");
  Fill(mem.p, len, 4242);
  std::memcpy(expect.p, mem.p, len);
  std::string base, layer;
  PW_RETURN_IF_ERROR(Snapshots(dir, mem.p, len, &base, &layer));

  // push: the base snapshot, beside one object of the same size.
  Progress(opts, "remote: push");
  uint64_t t0 = NowNs();
  PW_ASSIGN_OR_RETURN(PushStats full, PushImage(base, side.Url("base"), {side.remote}));
  const double push_s = static_cast<double>(NowNs() - t0) / 1e9;
  std::vector<uint8_t> blob(full.bytes_uploaded());
  for (size_t i = 0; i < blob.size(); i += 4096) blob[i] = static_cast<uint8_t>(i >> 12);
  t0 = NowNs();
  PW_RETURN_IF_ERROR(side.s3->PutObjectMultipart(side.bucket, "single-object", blob.data(),
                                                 blob.size(), 16u << 20,
                                                 remote::Clock::now() + std::chrono::minutes(10)));
  const double put_s = static_cast<double>(NowNs() - t0) / 1e9;
  const double mb = static_cast<double>(blob.size()) / 1e6;
  report->Add({"push", "mb_per_s", mb / push_s, "MB/s", "single_object_put", mb / put_s});
  Progress(opts, "remote: push the layer");
  PW_ASSIGN_OR_RETURN(PushStats second, PushImage(layer, side.Url("layer"), {side.remote}));
  report->Add({"push_layer", "uploaded_fraction",
               static_cast<double>(second.bytes_uploaded()) / static_cast<double>(len), "ratio",
               "full_image_push",
               static_cast<double>(full.bytes_uploaded()) / static_cast<double>(len)});

  // Restores of the base snapshot: a warm-up, the working set's trace.
  const std::vector<size_t> ws = WorkingSet(pages, 99);
  RestoreCase local{base, {}, {}, false};
  Progress(opts, "remote: warm-up and working-set trace");
  PW_RETURN_IF_ERROR(RestoreOnce(local, len, {}, expect.p).status());
  RestoreCase rec = local;
  rec.record = true;
  PW_ASSIGN_OR_RETURN(Measured recorded, RestoreOnce(rec, len, ws, expect.p));
  std::vector<uint64_t> trace;
  for (const TraceEntry& e : recorded.trace.entries) trace.push_back(e.offset);

  Rounds cold, cold_local, pre, pre_local, warm, warm_local, warm_mem;
  for (int round = 0; round < kRounds; ++round) {
    const std::string cache = dir + "/cache-" + std::to_string(round);
    RestoreCase s3{side.Url("base"), side.remote, {}, false};
    s3.remote.cache_dir = cache;
    Progress(opts, "remote: round " + std::to_string(round + 1) + ": cold");
    PW_ASSIGN_OR_RETURN(Measured m, RestoreOnce(s3, len, ws, expect.p));
    cold.Add(m);
    PW_ASSIGN_OR_RETURN(m, RestoreOnce(local, len, ws, expect.p));
    cold_local.Add(m);
    Progress(opts, "remote: round " + std::to_string(round + 1) + ": warm");
    PW_ASSIGN_OR_RETURN(m, RestoreOnce(s3, len, ws, expect.p));  // the cache is full now
    warm.Add(m);
    PW_ASSIGN_OR_RETURN(m, RestoreOnce(local, len, ws, expect.p));
    warm_local.Add(m);
    {
      // Another image of the same store stays open: its memory tier is hot.
      ImageOpenOptions oo;
      oo.remote = s3.remote;
      PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> keep, Image::Open(s3.name, oo));
      PW_RETURN_IF_ERROR(RestoreOnce(s3, len, ws, expect.p).status());  // fills the tier
      PW_ASSIGN_OR_RETURN(m, RestoreOnce(s3, len, ws, expect.p));
      warm_mem.Add(m);
    }
    Progress(opts, "remote: round " + std::to_string(round + 1) + ": cold with prefetch");
    RestoreCase s3p = s3;
    s3p.remote.cache_dir = cache + "-prefetch";
    s3p.prefetch = trace;
    PW_ASSIGN_OR_RETURN(m, RestoreOnce(s3p, len, ws, expect.p));
    pre.Add(m);
    RestoreCase localp = local;
    localp.prefetch = trace;
    PW_ASSIGN_OR_RETURN(m, RestoreOnce(localp, len, ws, expect.p));
    pre_local.Add(m);
  }
  Progress(opts, "");
  Report(report, "s3_cold", cold, cold_local, "local_image");
  Report(report, "s3_cold_prefetch", pre, pre_local, "local_image");
  Report(report, "s3_warm", warm, warm_local, "local_image");
  report->Add(
      {"s3_warm_memory", "working_set_ms", Median(warm_mem.ws), "ms", "s3_warm", Median(warm.ws)});
  return Status::Ok();
}

BenchRegistration reg("remote",
                      "Images in S3: push, layer dedup, lazy restores cold/prefetched/warm beside "
                      "the local image",
                      RunRemoteBench);

}  // namespace
}  // namespace pagewise::bench
