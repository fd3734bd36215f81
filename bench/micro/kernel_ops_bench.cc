// Google Benchmark micro-benchmarks of the raw kernel operations pagewise is
// built on: UFFDIO_COPY/ZEROPAGE/MOVE per batch size, UFFDIO_WRITEPROTECT and
// PAGEMAP_SCAN get+re-arm at several written fractions, beside memcpy and a
// plain first-touch fault. These are the floors the library's figures are
// compared with. Run: build/pagewise_microbench [--benchmark_format=json].
//
// Every benchmark maps fresh memory per batch outside the timed region and
// warms the source buffers, so the timed region holds only the operation.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "pagewise/host.h"
#include "sys/env.h"
#include "sys/pagemap.h"
#include "sys/userfaultfd.h"

namespace pagewise {
namespace {

const size_t kPage = PageSize();
constexpr size_t kRegion = 64 << 20;  // per measurement round

// Fresh 4 KiB-page memory (unmapped when the returned owner goes).
MemoryMapping MapAnon(size_t len) {
  Result<MemoryMapping> m = MemoryMapping::Anonymous(len, {.huge_pages = HugePages::kNever});
  if (!m.ok()) std::abort();
  return std::move(*m);
}

void Unmap(MemoryMapping* m) {
  if (!m->Unmap().ok()) std::abort();
}

sys::Userfaultfd OpenUffd(uint64_t features) {
  sys::Userfaultfd::Options o;
  o.required_features = features;
  auto u = sys::Userfaultfd::Open(o);
  if (!u.ok()) std::abort();
  return std::move(u).value();
}

// UFFDIO_COPY of `batch` pages per ioctl into fresh missing-registered memory.
void BM_UffdCopy(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0)) * kPage;
  std::vector<char> src(batch, 'p');
  sys::Userfaultfd u = OpenUffd(0);
  for (auto _ : state) {
    state.PauseTiming();
    MemoryMapping dst_map = MapAnon(kRegion);
    char* dst = dst_map.data();
    if (!u.Register(reinterpret_cast<uint64_t>(dst), kRegion, sys::kRegisterMissing).ok())
      std::abort();
    state.ResumeTiming();
    for (size_t off = 0; off < kRegion; off += batch) {
      FillResult r = u.Copy(reinterpret_cast<uint64_t>(dst) + off, src.data(), batch);
      benchmark::DoNotOptimize(r);
    }
    state.PauseTiming();
    Unmap(&dst_map);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRegion));
}
BENCHMARK(BM_UffdCopy)->Arg(1)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond);

void BM_UffdZeropage(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0)) * kPage;
  sys::Userfaultfd u = OpenUffd(0);
  for (auto _ : state) {
    state.PauseTiming();
    MemoryMapping dst_map = MapAnon(kRegion);
    char* dst = dst_map.data();
    if (!u.Register(reinterpret_cast<uint64_t>(dst), kRegion, sys::kRegisterMissing).ok())
      std::abort();
    state.ResumeTiming();
    for (size_t off = 0; off < kRegion; off += batch) {
      benchmark::DoNotOptimize(u.Zeropage(reinterpret_cast<uint64_t>(dst) + off, batch));
    }
    state.PauseTiming();
    Unmap(&dst_map);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRegion));
}
BENCHMARK(BM_UffdZeropage)->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond);

void BM_UffdMove(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0)) * kPage;
  sys::Userfaultfd u = OpenUffd(sys::kFeatureMove);
  for (auto _ : state) {
    state.PauseTiming();
    MemoryMapping src_map = MapAnon(kRegion);
    char* src = src_map.data();
    for (size_t off = 0; off < kRegion; off += kPage) src[off] = 1;
    MemoryMapping dst_map = MapAnon(kRegion);
    char* dst = dst_map.data();
    if (!u.Register(reinterpret_cast<uint64_t>(dst), kRegion, sys::kRegisterMissing).ok())
      std::abort();
    state.ResumeTiming();
    for (size_t off = 0; off < kRegion; off += batch) {
      benchmark::DoNotOptimize(u.Move(reinterpret_cast<uint64_t>(dst) + off,
                                      reinterpret_cast<uint64_t>(src) + off, batch));
    }
    state.PauseTiming();
    Unmap(&dst_map);
    Unmap(&src_map);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRegion));
}
BENCHMARK(BM_UffdMove)->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond);

// Baseline for the fills: memcpy into already-populated memory, and the
// kernel's own first-touch fault.
void BM_Memcpy(benchmark::State& state) {
  MemoryMapping dst_map = MapAnon(kRegion);
  char* dst = dst_map.data();
  std::vector<char> src(kRegion, 'p');
  std::memset(dst, 1, kRegion);
  for (auto _ : state) {
    std::memcpy(dst, src.data(), kRegion);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRegion));
  Unmap(&dst_map);
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond);

void BM_FirstTouch(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    MemoryMapping dst_map = MapAnon(kRegion);
    char* dst = dst_map.data();
    state.ResumeTiming();
    for (size_t off = 0; off < kRegion; off += kPage) dst[off] = 1;
    benchmark::ClobberMemory();
    state.PauseTiming();
    Unmap(&dst_map);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRegion));
}
BENCHMARK(BM_FirstTouch)->Unit(benchmark::kMillisecond);

// PAGEMAP_SCAN get + re-arm (WP_MATCHING) over a WP_ASYNC region with a
// given per-mille of pages written since the last scan.
void BM_PagemapScanRearm(benchmark::State& state) {
  const int permille = static_cast<int>(state.range(0));
  MemoryMapping mem_map = MapAnon(kRegion);
  char* mem = mem_map.data();
  std::memset(mem, 1, kRegion);
  sys::Userfaultfd u =
      OpenUffd(sys::kFeaturePagefaultFlagWp | sys::kFeatureWpAsync | sys::kFeatureWpUnpopulated);
  const uint64_t start = reinterpret_cast<uint64_t>(mem);
  if (!u.Register(start, kRegion, sys::kRegisterWp).ok() ||
      !u.WriteProtect(start, kRegion, true).ok())
    std::abort();
  auto scanner = sys::PagemapScanner::Open();
  if (!scanner.ok()) std::abort();
  PagemapScanArgs args;
  args.start = start;
  args.end = start + kRegion;
  args.flags = sys::kScanWpMatching | sys::kScanCheckWpAsync;
  args.category_mask = args.return_mask = sys::page_is::kWritten;
  std::mt19937_64 rng(42);
  const size_t pages = kRegion / kPage;
  std::vector<PageRegion> out;
  for (auto _ : state) {
    state.PauseTiming();
    for (size_t i = 0; i < pages * static_cast<size_t>(permille) / 1000; ++i) {
      mem[(rng() % pages) * kPage] = 2;
    }
    out.clear();
    state.ResumeTiming();
    if (!scanner->ScanAll(args, &out).ok()) std::abort();
    benchmark::DoNotOptimize(out.data());
  }
  Unmap(&mem_map);
}
BENCHMARK(BM_PagemapScanRearm)->Arg(0)->Arg(10)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

void BM_UffdWriteProtectRange(benchmark::State& state) {
  MemoryMapping mem_map = MapAnon(kRegion);
  char* mem = mem_map.data();
  std::memset(mem, 1, kRegion);
  sys::Userfaultfd u = OpenUffd(sys::kFeaturePagefaultFlagWp | sys::kFeatureWpAsync);
  const uint64_t start = reinterpret_cast<uint64_t>(mem);
  if (!u.Register(start, kRegion, sys::kRegisterWp).ok()) std::abort();
  for (auto _ : state) {
    if (!u.WriteProtect(start, kRegion, true).ok()) std::abort();
    state.PauseTiming();
    if (!u.WriteProtect(start, kRegion, false).ok()) std::abort();
    state.ResumeTiming();
  }
  Unmap(&mem_map);
}
BENCHMARK(BM_UffdWriteProtectRange)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pagewise

BENCHMARK_MAIN();
