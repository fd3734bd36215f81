// ValidateFillPolicy: the one check of a FillPolicy's ranges, for LazyRestore
// and PageServer alike (values are refused, never clamped).
#include <cstddef>
#include <string>

#include "pagewise/restore.h"

namespace pagewise {
namespace {

Status CheckRange(const char* field, size_t value, size_t lo, size_t hi) {
  if (value >= lo && value <= hi) return Status::Ok();
  return Status::InvalidArgument("FillPolicy::" + std::string(field) + " is " +
                                 std::to_string(value) + "; it must be in [" + std::to_string(lo) +
                                 ", " + std::to_string(hi) + "]");
}

}  // namespace

Status ValidateFillPolicy(const FillPolicy& policy) {
  PW_RETURN_IF_ERROR(CheckRange("fault_window_pages", policy.fault_window_pages, 1, 512));
  PW_RETURN_IF_ERROR(CheckRange("background_batch_pages", policy.background_batch_pages, 1, 4096));
  PW_RETURN_IF_ERROR(
      CheckRange("max_latency_samples", policy.max_latency_samples, 0, size_t{1} << 24));
  return Status::Ok();
}

}  // namespace pagewise
