// Status formatting and the single errno-to-Status mapping.
#include "pagewise/status.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace pagewise {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kNotSupported:
      return "not_supported";
    case Code::kPermissionDenied:
      return "permission_denied";
    case Code::kNotFound:
      return "not_found";
    case Code::kAlreadyExists:
      return "already_exists";
    case Code::kRetry:
      return "retry";
    case Code::kResourceExhausted:
      return "resource_exhausted";
    case Code::kNoSpace:
      return "no_space";
    case Code::kIoError:
      return "io_error";
    case Code::kCorruption:
      return "corruption";
    case Code::kPeerGone:
      return "peer_gone";
    case Code::kFailedPrecondition:
      return "failed_precondition";
    case Code::kInternal:
      return "internal";
    case Code::kTimeout:
      return "timeout";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out(CodeName(code_));
  out += ": ";
  out += message_;
  if (errno_ != 0) {
    out += " [errno ";
    out += std::to_string(errno_);
    out += ": ";
    out += std::strerror(errno_);
    out += "]";
  }
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, errno_, std::move(msg));
}

Status ErrnoStatus(int err, std::string_view what, std::string_view hint) {
  Code code;
  switch (err) {
    case 0:
      code = Code::kInternal;
      break;  // caller bug: no errno to report
    case ENOSYS:
    case EOPNOTSUPP:
    case ENOTTY:
      code = Code::kNotSupported;
      break;
    case EPERM:
    case EACCES:
      code = Code::kPermissionDenied;
      break;
    case ENOENT:
      code = Code::kNotFound;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    case EAGAIN:
      code = Code::kRetry;
      break;
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      code = Code::kResourceExhausted;
      break;
    case ENOSPC:
    case EDQUOT:
      code = Code::kNoSpace;
      break;
    case EINVAL:
    case EFAULT:
    case ERANGE:
      code = Code::kInvalidArgument;
      break;
    case ESRCH:
    case EPIPE:
    case ECONNRESET:
    case ECONNREFUSED:
    case ENOTCONN:
      code = Code::kPeerGone;
      break;
    case ETIMEDOUT:
      code = Code::kTimeout;
      break;
    default:
      code = Code::kIoError;
      break;
  }
  std::string msg(what);
  msg += " failed";
  if (!hint.empty()) {
    msg += "; ";
    msg += hint;
  }
  return Status(code, err, std::move(msg));
}

}  // namespace pagewise
