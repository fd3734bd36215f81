// Shared pieces of `pagewise bench restore` (bench_restore.cc: in-process
// lazy restore; bench_restore_serve.cc: the page server and its clients):
// benchmark content, the files written from it, access patterns, touching.
//
// Thread safety: pure functions over their arguments; Touch may run on
// several threads over different memory.
#ifndef PAGEWISE_BENCH_BENCH_RESTORE_COMMON_H_
#define PAGEWISE_BENCH_BENCH_RESTORE_COMMON_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"

namespace pagewise::bench {

// A private anonymous mapping owned by the benchmark (unmapped when it goes).
struct BenchMem {
  char* p = nullptr;
  size_t len = 0;
  static Result<BenchMem> Map(size_t len);
  BenchMem() = default;
  BenchMem(BenchMem&& o) noexcept : p(o.p), len(o.len) { o.p = nullptr; }
  BenchMem& operator=(BenchMem&& o) noexcept;
  ~BenchMem();
};

// 40% zero pages, 30% copies of 64 template pages, 30% random pages.
void MakeContent(char* p, size_t len, uint64_t seed);

// Writes `mem` as an LZ4 image (one flat region) and as a raw flat file.
Status WriteImage(const std::string& path, const char* mem, size_t len);
Status WriteRaw(const std::string& path, const char* mem, size_t len);

// Page indexes in the order a reader touches them: "seq" (all, in order),
// "rand10" (10% at random), "ws" (5% in 64 clusters, each read in order).
std::vector<size_t> Pattern(const std::string& name, size_t pages, uint64_t seed);

// Reads one word of each page order[from, to) of p (volatile loads).
void Touch(const char* p, const std::vector<size_t>& order, size_t from = 0, size_t to = SIZE_MAX);

// Pages of `order` whose content in `got` differs from `expect`.
size_t CountWrongPages(const char* got, const char* expect, const std::vector<size_t>& order);

double Ms(uint64_t ns);

// ---- page-server rows (bench_restore_serve.cc) ------------------------------

// `prefetch` `connect_to_working_set_ms` vs `no_prefetch`: a LazyClient of an
// in-process PageServer of `source`, from Connect (the wait for the ready
// byte included) until `order` was read; `trace` is the prefetch list.
Status RunServePrefetchRows(const BenchOptions& opts, const std::string& dir,
                            const std::shared_ptr<PageSource>& source, const char* content,
                            size_t len, const std::vector<size_t>& order,
                            const std::vector<uint64_t>& trace, BenchReport* report);

// `clients32` `working_set_ms_p50` and `server_rss_mib` vs `single_client`:
// a `pagewise serve` process serving one image to 32 clients at once.
Status RunClientsRows(const BenchOptions& opts, const std::string& dir, BenchReport* report);

}  // namespace pagewise::bench

#endif  // PAGEWISE_BENCH_BENCH_RESTORE_COMMON_H_
