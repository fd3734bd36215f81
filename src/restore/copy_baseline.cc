// TimeUffdCopyBaseline implementation.
#include "restore/copy_baseline.h"

#include <linux/userfaultfd.h>
#include <sys/mman.h>

#include "base/clock.h"
#include "sys/userfaultfd.h"

namespace pagewise {

Result<UffdCopyTiming> TimeUffdCopyBaseline(const void* src, size_t len, size_t batch_pages,
                                            Env* env) {
  if (env == nullptr) env = Env::Default();
  const size_t page = PageSize();
  if (len == 0 || len % page != 0 || batch_pages == 0) {
    return Status::InvalidArgument(
        "TimeUffdCopyBaseline: len must be a non-zero multiple of the page "
        "size and batch_pages > 0");
  }
  sys::Userfaultfd::Options o;
  o.env = env;
  PW_ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(o));
  PW_ASSIGN_OR_RETURN(void* dst, env->Mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  // Same 4 KiB granularity as the restore engine fills at.
  env->Madvise(dst, len, MADV_NOHUGEPAGE).IgnoreError();  // advisory only
  const uint64_t base = reinterpret_cast<uint64_t>(dst);
  Status st = uffd.Register(base, len, UFFDIO_REGISTER_MODE_MISSING);
  UffdCopyTiming t;
  if (st.ok()) {
    const size_t batch = batch_pages * page;
    const char* s = static_cast<const char*>(src);
    const uint64_t t0 = NowNs();
    for (size_t off = 0; off < len && st.ok(); off += batch) {
      const size_t n = off + batch <= len ? batch : len - off;
      FillResult r = uffd.Copy(base + off, s + off, n);
      st = sys::FillStatus(r, "UFFDIO_COPY", base + off, n);
    }
    t.copy_ns = NowNs() - t0;
    t.bytes = len;
  }
  Status unmap = env->Munmap(dst, len);
  PW_RETURN_IF_ERROR(st);
  PW_RETURN_IF_ERROR(unmap);
  return t;
}

}  // namespace pagewise
