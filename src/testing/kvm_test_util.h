// KVM in tests: skip (saying how to get it) only where /dev/kvm is missing
// or not accessible to this user, as on a machine without virtualization;
// with PAGEWISE_FORBID_SKIP=1 (make test) that skip fails the run.
//
// Thread safety: call from the test's thread.
#ifndef PAGEWISE_TESTING_KVM_TEST_UTIL_H_
#define PAGEWISE_TESTING_KVM_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <string>

#include "sys/kvm.h"
#include "testing/skip.h"

namespace pagewise::testing {

// "" when /dev/kvm opens and works; otherwise why not, and how to get it.
inline std::string KvmUnavailableReason() {
  Result<sys::Kvm> kvm = sys::Kvm::Open();
  if (kvm.ok()) return "";
  return kvm.status().ToString();
}

}  // namespace pagewise::testing

// Skips the current test when KVM is unavailable (see above).
#define PAGEWISE_REQUIRE_KVM()                                                      \
  do {                                                                              \
    const std::string pw_kvm_reason_ = ::pagewise::testing::KvmUnavailableReason(); \
    if (!pw_kvm_reason_.empty()) PAGEWISE_SKIP() << pw_kvm_reason_;                 \
  } while (0)

#endif  // PAGEWISE_TESTING_KVM_TEST_UTIL_H_
