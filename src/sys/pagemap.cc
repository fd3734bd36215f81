// PagemapScanner implementation.
#include "sys/pagemap.h"

#include <string>

namespace pagewise::sys {

Result<PagemapScanner> PagemapScanner::Open(Env* env, pid_t pid) {
  if (env == nullptr) env = Env::Default();
  PW_ASSIGN_OR_RETURN(int fd, env->OpenPagemap(pid));
  return PagemapScanner(fd, env);
}

PagemapScanner& PagemapScanner::operator=(PagemapScanner&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) env_->Close(fd_).IgnoreError();  // nothing to do on failure
    fd_ = o.fd_;
    env_ = o.env_;
    o.fd_ = -1;
  }
  return *this;
}

PagemapScanner::~PagemapScanner() {
  if (fd_ >= 0) env_->Close(fd_).IgnoreError();  // nothing to do on failure
}

Result<PagemapScanOut> PagemapScanner::ScanOnce(const PagemapScanArgs& args, PageRegion* vec,
                                                size_t vec_len) const {
  Result<PagemapScanOut> r = env_->PagemapScan(fd_, args, vec, vec_len);
  if (!r.ok() && r.status().code() == Code::kNotSupported) {
    return Status(Code::kNotSupported, r.status().err(),
                  "PAGEMAP_SCAN is not supported by this kernel (needs Linux 6.7+); "
                  "use the uffd-wp or mprotect tracking backend");
  }
  return r;
}

Status PagemapScanner::ScanAll(const PagemapScanArgs& args, std::vector<PageRegion>* out,
                               uint64_t* walk_end, size_t vec_len) const {
  std::vector<PageRegion> vec(vec_len);
  PagemapScanArgs a = args;
  uint64_t budget = args.max_pages;  // 0: unlimited
  const uint64_t page = PageSize();
  if (walk_end) *walk_end = a.start;
  while (a.start < a.end) {
    a.max_pages = budget;
    PW_ASSIGN_OR_RETURN(PagemapScanOut r, ScanOnce(a, vec.data(), vec.size()));
    for (size_t i = 0; i < r.regions; ++i) {
      PageRegion reg = vec[i];
      // After an early stop the kernel may report a walk_end inside the last
      // region it returned, and the resumed walk reports that part again:
      // clip what was already appended so no page is counted twice.
      if (!out->empty() && reg.start < out->back().end && reg.end > out->back().start) {
        if (reg.end <= out->back().end) continue;
        reg.start = out->back().end;
      }
      if (!out->empty() && out->back().end == reg.start &&
          out->back().categories == reg.categories) {
        out->back().end = reg.end;
      } else {
        out->push_back(reg);
      }
      if (args.max_pages != 0) budget -= (reg.end - reg.start) / page;
    }
    if (walk_end) *walk_end = r.walk_end;
    if (r.walk_end <= a.start) {
      // The kernel must make progress unless the budget or vector stopped it
      // with nothing reported; anything else would loop forever.
      if (args.max_pages != 0 && budget == 0) break;
      return Status::Internal("PAGEMAP_SCAN made no progress at walk_end=" +
                              std::to_string(r.walk_end));
    }
    a.start = r.walk_end;
    if (args.max_pages != 0 && budget == 0) break;
  }
  return Status::Ok();
}

}  // namespace pagewise::sys
