// Status and Result<T>: how every pagewise function reports failure.
//
// A Status carries a Code (what kind of failure, for control flow), the errno
// that caused it (0 when none) and a human message that says what failed,
// where, and what to do about it. Result<T> is a T or a non-OK Status.
// Both are [[nodiscard]]: ignoring an error is a compile error under -Werror.
//
// Thread safety: Status and Result are plain values; distinct objects may be
// used from distinct threads, one object needs external synchronisation.
#ifndef PAGEWISE_STATUS_H_
#define PAGEWISE_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "pagewise/export.h"

namespace pagewise {
PAGEWISE_API_BEGIN

enum class Code {
  kOk = 0,
  kInvalidArgument,     // the caller passed something wrong; fix the call
  kNotSupported,        // the kernel or build lacks a feature; never an I/O error
  kPermissionDenied,    // EPERM/EACCES: privileges or sysctl settings
  kNotFound,            // a file, region or name that does not exist
  kAlreadyExists,       // EEXIST: e.g. a page already mapped, a range tracked twice
  kRetry,               // EAGAIN: transient; the message says what to do first
  kResourceExhausted,   // ENOMEM and friends
  kNoSpace,             // ENOSPC/EDQUOT: the disk is full
  kIoError,             // any other failing system call or I/O
  kCorruption,          // data read back is not what was written (image checks)
  kPeerGone,            // ESRCH/EPIPE/ECONNRESET: the other process is gone
  kFailedPrecondition,  // the object is in the wrong state for the call
  kInternal,            // a pagewise bug: please report it
  kTimeout,             // a wait's time limit expired first (ETIMEDOUT); not kRetry
};

// Returns a stable lower-case name for `code` ("invalid_argument", ...).
std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  // Constructs OK.
  Status() = default;
  // Constructs a status; `code` may be kOk only with an empty message.
  Status(Code code, int err, std::string message)
      : code_(code), errno_(err), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, 0, std::move(msg)};
  }
  static Status NotSupported(std::string msg) { return {Code::kNotSupported, 0, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, 0, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, 0, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, 0, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) {
    return {Code::kFailedPrecondition, 0, std::move(msg)};
  }
  static Status PeerGone(std::string msg) { return {Code::kPeerGone, 0, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, 0, std::move(msg)}; }
  static Status IoError(std::string msg) { return {Code::kIoError, 0, std::move(msg)}; }
  static Status Timeout(std::string msg) { return {Code::kTimeout, 0, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The errno behind this status, or 0.
  int err() const { return errno_; }
  const std::string& message() const { return message_; }

  // "code_name: message" (plus " [errno N: strerror]" when err() != 0); "ok" when OK.
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>". OK stays OK.
  Status WithContext(std::string_view context) const;

  // Explicitly discards a status the caller has decided it cannot act on
  // (e.g. cleanup after another error). Use sparingly, with a comment.
  void IgnoreError() const {}

 private:
  Code code_ = Code::kOk;
  int errno_ = 0;
  std::string message_;
};

// The one place that turns an errno into a Status. `what` names the operation
// and its operands ("UFFDIO_COPY dst=0x7f.. len=4096"); `hint`, if not empty,
// says what the user can do. ENOSYS/EOPNOTSUPP/ENOTTY map to kNotSupported.
Status ErrnoStatus(int err, std::string_view what, std::string_view hint = {});

template <typename T>
class [[nodiscard]] Result {
 public:
  // Implicit from a value or from a non-OK status, so `return value;` and
  // `return status;` both work.
  Result(T value) : value_(std::move(value)) {}         // NOLINT(runtime/explicit)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(runtime/explicit)
    assert(!status_.ok() && "Result<T> built from an OK status has no value");
    if (status_.ok()) status_ = Status::Internal("Result built from OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // Precondition: ok().
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

PAGEWISE_API_END
}  // namespace pagewise

#define PW_CONCAT_INNER_(a, b) a##b
#define PW_CONCAT_(a, b) PW_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define PW_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::pagewise::Status pw_status_ = (expr);  \
    if (!pw_status_.ok()) return pw_status_; \
  } while (0)

// `lhs = value of expr` or return its status. `lhs` may declare a variable.
#define PW_ASSIGN_OR_RETURN(lhs, expr) \
  PW_ASSIGN_OR_RETURN_IMPL_(PW_CONCAT_(pw_result_, __LINE__), lhs, expr)
#define PW_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#endif  // PAGEWISE_STATUS_H_
