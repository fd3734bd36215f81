// WriteScanBaseline (sys/scan_baseline.h): one PAGEMAP_SCAN pass, for
// benchmark baselines.
#include "sys/scan_baseline.h"

#include <string>
#include <utility>

#include "pagewise/probe.h"
#include "sys/pagemap.h"
#include "sys/uapi.h"
#include "sys/userfaultfd.h"

namespace pagewise {

struct WriteScanBaseline::Impl {
  Env* env = nullptr;
  sys::PagemapScanner scanner;
  sys::Userfaultfd uffd;  // opened by the first Arm()
  std::vector<PageRegion> vec;
  std::vector<std::pair<uint64_t, uint64_t>> armed;  // [start, len)
};

WriteScanBaseline::WriteScanBaseline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WriteScanBaseline::~WriteScanBaseline() {
  if (!impl_ || !impl_->uffd.valid()) return;
  for (const auto& [start, len] : impl_->armed) {
    // Best effort: closing the userfaultfd right after unregisters anyway.
    impl_->uffd.Unregister(start, len).IgnoreError();
  }
}

Result<std::unique_ptr<WriteScanBaseline>> WriteScanBaseline::Open(Env* env, size_t batch) {
  if (env == nullptr) env = Env::Default();
  if (batch == 0) return Status::InvalidArgument("WriteScanBaseline: batch must be > 0");
  PW_RETURN_IF_ERROR(RequirePagemapScan(Features(), "the raw PAGEMAP_SCAN baseline"));
  PW_RETURN_IF_ERROR(RequireUffd(
      Features(),
      uffd_feature::kPagefaultFlagWp | uffd_feature::kWpAsync | uffd_feature::kWpUnpopulated,
      "the raw PAGEMAP_SCAN baseline"));
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  PW_ASSIGN_OR_RETURN(impl->scanner, sys::PagemapScanner::Open(env, 0));
  impl->vec.resize(batch);
  return std::unique_ptr<WriteScanBaseline>(new WriteScanBaseline(std::move(impl)));
}

Status WriteScanBaseline::Arm(void* addr, size_t len) {
  const uint64_t start = reinterpret_cast<uint64_t>(addr);
  const uint64_t page = PageSize();
  if (len == 0 || start % page != 0 || len % page != 0) {
    return Status::InvalidArgument(
        "WriteScanBaseline::Arm: range must be page aligned and non-empty");
  }
  if (!impl_->uffd.valid()) {
    sys::Userfaultfd::Options o;
    o.required_features =
        UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    o.env = impl_->env;
    PW_ASSIGN_OR_RETURN(impl_->uffd, sys::Userfaultfd::Open(o));
  }
  PW_RETURN_IF_ERROR(impl_->uffd.Register(start, len, UFFDIO_REGISTER_MODE_WP)
                         .WithContext("WriteScanBaseline::Arm"));
  Status s = impl_->uffd.WriteProtect(start, len, true);
  if (!s.ok()) {
    impl_->uffd.Unregister(start, len).IgnoreError();  // undo; report the first error
    return s.WithContext("WriteScanBaseline::Arm");
  }
  impl_->armed.emplace_back(start, len);
  return Status::Ok();
}

Result<uint64_t> WriteScanBaseline::ScanWritten(void* addr, size_t len,
                                                std::vector<PageRange>* out) {
  PagemapScanArgs a;
  a.start = reinterpret_cast<uint64_t>(addr);
  a.end = a.start + len;
  a.flags = sys::kScanWpMatching;
  a.category_mask = sys::page_is::kWritten;
  a.return_mask = sys::page_is::kWritten;
  const uint64_t page = PageSize();
  uint64_t pages = 0;
  while (a.start < a.end) {
    PW_ASSIGN_OR_RETURN(PagemapScanOut r,
                        impl_->scanner.ScanOnce(a, impl_->vec.data(), impl_->vec.size()));
    for (size_t i = 0; i < r.regions; ++i) {
      pages += (impl_->vec[i].end - impl_->vec[i].start) / page;
      if (out != nullptr) out->push_back({impl_->vec[i].start, impl_->vec[i].end});
    }
    if (r.walk_end <= a.start) {
      return Status::Internal("PAGEMAP_SCAN made no progress at walk_end=" +
                              std::to_string(r.walk_end));
    }
    a.start = r.walk_end;
  }
  return pages;
}

}  // namespace pagewise
