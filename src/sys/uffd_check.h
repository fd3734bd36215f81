// Checking that a descriptor received from another process really is a
// userfaultfd, and what it was set up with.
//
// A page server adopts the descriptor a client sends as that client's
// userfaultfd: it polls it, reads "events" from it and fills through it.
// Anything else (a pipe or socket the client writes fabricated events into,
// an eventfd, a regular file) must be refused before the server acts on
// it. The check is made on the open file itself, by the kernel's account:
// /proc/self/fd/N must be the anonymous inode "anon_inode:[userfaultfd]"
// (no file a client can create or name reads so: paths start with '/',
// pipes and sockets read "pipe:[...]", "socket:[...]"), and
// /proc/self/fdinfo/N must carry the userfaultfd's "API:" line, whose
// feature word says whether UFFDIO_API was done and which features it
// granted.
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_SYS_UFFD_CHECK_H_
#define PAGEWISE_SYS_UFFD_CHECK_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "pagewise/status.h"

namespace pagewise::sys {

struct UffdInfo {
  bool initialized = false;  // UFFDIO_API done (the kernel's internal bit 31)
  uint64_t features = 0;     // UFFD_FEATURE_* granted (without the internal bit)
  // UFFD_FEATURE_EVENT_REMOVE was granted: MADV_DONTNEED/REMOVE are reported
  // (a page server needs it to know a dropped page reads as zero again).
  bool reports_removes() const;
};

// Inspects descriptor `fd` of this process. Errors: kInvalidArgument when
// it is not a userfaultfd (the message says what it is: "pipe:[123]",
// "socket:[...]", a path...), kIoError when /proc cannot be read.
Result<UffdInfo> InspectUserfaultfd(int fd);

// Parses the text of /proc/self/fdinfo/N (split out for tests and fuzzing):
// kInvalidArgument when it holds no well-formed userfaultfd "API:" line.
Result<UffdInfo> ParseUffdFdinfo(std::string_view fdinfo);

// "EVENT_FORK|EVENT_REMOVE|..." for a feature word (for logs).
std::string UffdFeatureNames(uint64_t features);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_UFFD_CHECK_H_
