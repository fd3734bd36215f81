// C API: errors, version, probe, regions, trackers and checkpoints.
#include <sys/utsname.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "capi/capi_internal.h"
#include "pagewise/checkpoint.h"
#include "pagewise/probe.h"
#include "pagewise/snapshot.h"
#include "pagewise/version.h"

namespace pagewise::capi {
namespace {

thread_local std::string t_errmsg;

}  // namespace

int ErrnoFor(Code code) {
  switch (code) {
    case Code::kOk:
      return 0;
    case Code::kInvalidArgument:
      return -EINVAL;
    case Code::kNotSupported:
      return -EOPNOTSUPP;
    case Code::kPermissionDenied:
      return -EPERM;
    case Code::kNotFound:
      return -ENOENT;
    case Code::kAlreadyExists:
      return -EEXIST;
    case Code::kRetry:
      return -EAGAIN;
    case Code::kTimeout:
      return -ETIMEDOUT;
    case Code::kResourceExhausted:
      return -ENOMEM;
    case Code::kNoSpace:
      return -ENOSPC;
    case Code::kIoError:
      return -EIO;
    case Code::kCorruption:
      return -EBADMSG;
    case Code::kPeerGone:
      return -EPIPE;
    case Code::kFailedPrecondition:
      return -EBUSY;
    case Code::kInternal:
      return -ENOTRECOVERABLE;
  }
  return -ENOTRECOVERABLE;
}

int SetError(const Status& s) {
  if (s.ok()) return 0;
  try {
    t_errmsg = s.ToString();
  } catch (...) {
    t_errmsg.clear();  // out of memory for the message: the code still tells
  }
  return ErrnoFor(s.code());
}

int SetException(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc&) {
    return SetError(Status(Code::kResourceExhausted, ENOMEM, "out of memory"));
  } catch (const std::exception& x) {
    return SetError(Status::Internal(std::string("unexpected C++ exception: ") + x.what()));
  } catch (...) {
    return SetError(Status::Internal("unexpected C++ exception"));
  }
}

int InvalidArgument(const std::string& what) { return SetError(Status::InvalidArgument(what)); }

Duration ToDuration(int64_t ns) { return ns < 0 ? kNoTimeout : Duration(ns); }

Result<std::vector<Region>> ToRegions(const pagewise_region* regions, size_t count) {
  if (regions == nullptr && count > 0) {
    return Status::InvalidArgument("regions is NULL but count is " + std::to_string(count));
  }
  std::vector<Region> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const pagewise_region& c = regions[i];
    Region r;
    r.address = c.address;
    r.length = c.length;
    r.offset = c.offset;
    r.page_size = c.page_size != 0 ? c.page_size : PageSize();
    r.prot = c.prot;
    r.kind = static_cast<RegionKind>(c.kind);
    if (c.name != nullptr) r.name = c.name;
    out.push_back(std::move(r));
  }
  return out;
}

void FromRegion(const Region& r, pagewise_region* out) {
  out->address = r.address;
  out->length = r.length;
  out->offset = r.offset;
  out->page_size = static_cast<uint32_t>(r.page_size);
  out->prot = r.prot;
  out->kind = static_cast<pagewise_region_kind>(r.kind);
  out->name = r.name.c_str();
}

Result<TrackBackend> ToBackend(pagewise_backend b) {
  switch (b) {
    case PAGEWISE_BACKEND_AUTO:
      return TrackBackend::kAuto;
    case PAGEWISE_BACKEND_UFFD_WP_ASYNC:
      return TrackBackend::kUffdWpAsync;
    case PAGEWISE_BACKEND_UFFD_WP:
      return TrackBackend::kUffdWp;
    case PAGEWISE_BACKEND_MPROTECT:
      return TrackBackend::kMprotect;
    case PAGEWISE_BACKEND_SOFT_DIRTY:
      return TrackBackend::kSoftDirty;
  }
  return Status::InvalidArgument("unknown backend value " + std::to_string(static_cast<int>(b)) +
                                 " (PAGEWISE_BACKEND_AUTO .. PAGEWISE_BACKEND_SOFT_DIRTY)");
}

pagewise_backend FromBackend(TrackBackend b) {
  switch (b) {
    case TrackBackend::kAuto:
      return PAGEWISE_BACKEND_AUTO;
    case TrackBackend::kUffdWpAsync:
      return PAGEWISE_BACKEND_UFFD_WP_ASYNC;
    case TrackBackend::kUffdWp:
      return PAGEWISE_BACKEND_UFFD_WP;
    case TrackBackend::kMprotect:
      return PAGEWISE_BACKEND_MPROTECT;
    case TrackBackend::kSoftDirty:
      return PAGEWISE_BACKEND_SOFT_DIRTY;
    case TrackBackend::kTwoStep:
      break;  // a negative control (pagewise check/explore), not in the C API
  }
  return PAGEWISE_BACKEND_AUTO;
}

}  // namespace pagewise::capi

namespace pc = pagewise::capi;
using pagewise::Result;
using pagewise::Status;

struct pagewise_checkpoint {
  std::unique_ptr<pagewise::Checkpoint> checkpoint;
};

extern "C" {

const char* pagewise_version(void) { return pagewise::Version(); }

const char* pagewise_errmsg(void) { return pc::t_errmsg.c_str(); }

int pagewise_probe(pagewise_features* out) {
  return pc::Guard([&] {
    if (out == nullptr) return pc::InvalidArgument("pagewise_probe: out is NULL");
    const pagewise::KernelFeatures& f = pagewise::Features();
    std::memset(out, 0, sizeof *out);
    std::strncpy(out->kernel_release, f.kernel_release.c_str(), sizeof out->kernel_release - 1);
    out->uffd_available = f.uffd_available;
    out->uffd_features = f.uffd_features;
    out->uffd_ioctls = f.uffd_ioctls;
    out->pagemap_scan = f.pagemap_scan;
    out->soft_dirty = f.soft_dirty;
    out->thp_size = f.thp_size;
    return 0;
  });
}

int pagewise_backend_available(pagewise_backend backend, const char** reason) {
  return pc::Guard([&] {
    // Computed once: the reasons' storage lives as long as the process.
    static const std::vector<pagewise::BackendInfo>* infos =
        new std::vector<pagewise::BackendInfo>(pagewise::DescribeBackends(pagewise::Features()));
    Result<pagewise::TrackBackend> b = pc::ToBackend(backend);
    if (!b.ok()) return pc::SetError(b.status());
    if (*b == pagewise::TrackBackend::kAuto) {
      return pc::InvalidArgument("pagewise_backend_available: ask about a concrete backend");
    }
    const std::string_view name = pagewise::BackendName(*b);
    for (const pagewise::BackendInfo& i : *infos) {
      if (i.name != name) continue;
      if (reason != nullptr) *reason = i.reason.c_str();
      return i.available ? 1 : 0;
    }
    return pc::SetError(Status::Internal("backend " + std::string(name) + " is not described"));
  });
}

const char* pagewise_backend_name(pagewise_backend backend) {
  Result<pagewise::TrackBackend> b = pc::ToBackend(backend);
  return b.ok() ? pagewise::BackendName(*b).data() : "unknown";
}

int pagewise_region_of(const void* addr, size_t len, pagewise_region* out) {
  return pc::Guard([&] {
    if (out == nullptr) return pc::InvalidArgument("pagewise_region_of: out is NULL");
    Result<pagewise::Region> r = pagewise::RegionFromMaps(addr, len);
    if (!r.ok()) return pc::SetError(r.status());
    pc::FromRegion(*r, out);
    out->name = nullptr;  // *r dies here
    return 0;
  });
}

int pagewise_tracker_create(pagewise_backend backend, pagewise_tracker** out) {
  return pc::Guard([&] {
    if (out == nullptr) return pc::InvalidArgument("pagewise_tracker_create: out is NULL");
    *out = nullptr;
    Result<pagewise::TrackBackend> b = pc::ToBackend(backend);
    if (!b.ok()) return pc::SetError(b.status());
    pagewise::TrackerOptions options;
    options.backend = *b;
    Result<std::unique_ptr<pagewise::Tracker>> t = pagewise::Tracker::Create(options);
    if (!t.ok()) return pc::SetError(t.status());
    *out = new pagewise_tracker{std::move(*t), {}};
    return 0;
  });
}

void pagewise_tracker_destroy(pagewise_tracker* tracker) { delete tracker; }

pagewise_backend pagewise_tracker_backend(const pagewise_tracker* tracker) {
  return tracker == nullptr ? PAGEWISE_BACKEND_AUTO : pc::FromBackend(tracker->tracker->backend());
}

int pagewise_tracker_track(pagewise_tracker* tracker, void* addr, size_t len) {
  return pc::Guard([&] {
    if (tracker == nullptr) return pc::InvalidArgument("pagewise_tracker_track: tracker is NULL");
    return pc::SetError(tracker->tracker->Track(addr, len));
  });
}

int pagewise_tracker_untrack(pagewise_tracker* tracker, void* addr, size_t len) {
  return pc::Guard([&] {
    if (tracker == nullptr) return pc::InvalidArgument("pagewise_tracker_untrack: tracker is NULL");
    return pc::SetError(tracker->tracker->Untrack(addr, len));
  });
}

int pagewise_tracker_collect(pagewise_tracker* tracker, const pagewise_range** ranges,
                             size_t* count) {
  static_assert(sizeof(pagewise_range) == sizeof(pagewise::PageRange));
  return pc::Guard([&] {
    if (tracker == nullptr || ranges == nullptr || count == nullptr) {
      return pc::InvalidArgument("pagewise_tracker_collect: NULL argument");
    }
    tracker->last.clear();
    Status s = tracker->tracker->Collect(&tracker->last);
    *ranges = reinterpret_cast<const pagewise_range*>(tracker->last.data());
    *count = tracker->last.size();
    if (!s.ok()) return pc::SetError(s);
    return 0;
  });
}

int pagewise_checkpoint_create(const pagewise_region* regions, size_t count,
                               pagewise_backend backend, pagewise_checkpoint** out) {
  return pc::Guard([&] {
    if (out == nullptr) return pc::InvalidArgument("pagewise_checkpoint_create: out is NULL");
    *out = nullptr;
    Result<std::vector<pagewise::Region>> rs = pc::ToRegions(regions, count);
    if (!rs.ok()) return pc::SetError(rs.status());
    Result<pagewise::TrackBackend> b = pc::ToBackend(backend);
    if (!b.ok()) return pc::SetError(b.status());
    pagewise::CheckpointOptions options;
    options.backend = *b;
    Result<std::unique_ptr<pagewise::Checkpoint>> c = pagewise::Checkpoint::Create(*rs, options);
    if (!c.ok()) return pc::SetError(c.status());
    *out = new pagewise_checkpoint{std::move(*c)};
    return 0;
  });
}

void pagewise_checkpoint_destroy(pagewise_checkpoint* checkpoint) { delete checkpoint; }

int pagewise_checkpoint_rewind(pagewise_checkpoint* checkpoint, pagewise_rewind_stats* stats) {
  return pc::Guard([&] {
    if (checkpoint == nullptr) return pc::InvalidArgument("pagewise_checkpoint_rewind: NULL");
    Result<pagewise::RewindStats> r = checkpoint->checkpoint->Rewind();
    if (!r.ok()) return pc::SetError(r.status());
    if (stats != nullptr) {
      stats->pages_restored = r->pages_restored;
      stats->pages_copied = r->pages_copied;
      stats->pages_zeroed = r->pages_zeroed;
      stats->duration_ns = static_cast<int64_t>(r->elapsed_ns);
    }
    return 0;
  });
}

int64_t pagewise_checkpoint_update(pagewise_checkpoint* checkpoint) {
  if (checkpoint == nullptr) return pc::InvalidArgument("pagewise_checkpoint_update: NULL");
  try {
    Result<uint64_t> r = checkpoint->checkpoint->Update();
    if (!r.ok()) return pc::SetError(r.status());
    return static_cast<int64_t>(*r);
  } catch (...) {
    return pc::SetException(std::current_exception());
  }
}

}  // extern "C"
