// InspectUserfaultfd: /proc/self/fd/N and /proc/self/fdinfo/N.
#include "sys/uffd_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "pagewise/probe.h"
#include "sys/files.h"
#include "sys/uapi.h"

namespace pagewise::sys {
namespace {

constexpr std::string_view kUffdLink = "anon_inode:[userfaultfd]";
constexpr uint64_t kInitializedBit = uint64_t{1}
                                     << 31;  // UFFD_FEATURE_INITIALIZED (kernel-internal)
constexpr uint64_t kUffdApi = 0xAA;

// One hexadecimal field of "API:\t<api>:<features>:<ioctls>", advancing *s
// past it and its ':' separator (if any).
bool HexField(std::string_view* s, uint64_t* out) {
  const char* b = s->data();
  const char* e = b + s->size();
  auto [p, ec] = std::from_chars(b, e, *out, 16);
  if (ec != std::errc() || p == b) return false;
  s->remove_prefix(static_cast<size_t>(p - b));
  if (!s->empty() && s->front() == ':') s->remove_prefix(1);
  return true;
}

}  // namespace

Result<UffdInfo> ParseUffdFdinfo(std::string_view text) {
  size_t at = 0;
  for (;;) {
    const size_t nl = text.find('\n', at);
    std::string_view line =
        text.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
    if (line.substr(0, 4) == "API:") {
      line.remove_prefix(4);
      while (!line.empty() && (line.front() == '\t' || line.front() == ' ')) line.remove_prefix(1);
      uint64_t api = 0, features = 0, ioctls = 0;
      if (!HexField(&line, &api) || !HexField(&line, &features) || !HexField(&line, &ioctls) ||
          api != kUffdApi) {
        return Status::InvalidArgument("malformed userfaultfd API line in fdinfo");
      }
      UffdInfo info;
      info.initialized = (features & kInitializedBit) != 0;
      info.features = features & ~kInitializedBit;
      return info;
    }
    if (nl == std::string_view::npos) break;
    at = nl + 1;
  }
  return Status::InvalidArgument("fdinfo has no userfaultfd API line");
}

Result<UffdInfo> InspectUserfaultfd(int fd) {
  if (fd < 0) return Status::InvalidArgument("no descriptor");
  const std::string n = std::to_string(fd);
  Result<std::string> link = ReadLink("/proc/self/fd/" + n);
  if (!link.ok()) return link.status().WithContext("inspecting the received descriptor");
  if (*link != kUffdLink) {
    return Status::InvalidArgument("the descriptor is not a userfaultfd (it is " + *link + ")");
  }
  const std::string path = "/proc/self/fdinfo/" + n;
  const int info_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (info_fd < 0) return ErrnoStatus(errno, "open " + path);
  std::string text;
  char buf[1024];
  for (;;) {
    const ssize_t got = read(info_fd, buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0 || text.size() > 65536) break;
    text.append(buf, static_cast<size_t>(got));
  }
  close(info_fd);
  Result<UffdInfo> info = ParseUffdFdinfo(text);
  if (!info.ok()) return info.status().WithContext("the descriptor (" + *link + ")");
  return info;
}

bool UffdInfo::reports_removes() const { return (features & UFFD_FEATURE_EVENT_REMOVE) != 0; }

std::string UffdFeatureNames(uint64_t f) {
  // The names themselves live in one table (pagewise/probe.h).
  std::string out;
  for (const std::string& name : pagewise::UffdFeatureNames(f)) {
    if (!out.empty()) out += '|';
    out += name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace pagewise::sys
