// AtomicFile: temporary file (O_EXCL|O_NOFOLLOW, random name) in the
// destination's directory, published by fsync + rename + directory fsync.
#include "base/atomic_file.h"

#include <fcntl.h>

#include <cerrno>
#include <cstdio>

#include "sys/files.h"
#include "sys/random_bytes.h"
#include "sys/temp_cleanup.h"

namespace pagewise {
namespace {

std::string RandomHex() {
  Result<uint64_t> r = sys::RandomU64();
  char buf[17];
  // getrandom cannot fail on Linux 3.17+ once the pool is initialised; if it
  // did, O_EXCL still refuses any file already there.
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(r.ok() ? *r : 0));
  return buf;
}

}  // namespace

Status CheckOutputPath(const std::string& output, const std::vector<std::string>& inputs) {
  if (output.empty() || output.back() == '/') {
    return Status::InvalidArgument("output path '" + output + "' does not name a file");
  }
  Result<sys::FileIdentity> out = sys::IdentifyPath(output, /*follow_symlinks=*/false);
  if (!out.ok()) {
    if (out.status().code() == Code::kNotFound) return Status::Ok();  // a new file
    return out.status().WithContext("checking output " + output);
  }
  if (!out->regular()) {
    return Status::InvalidArgument(
        "output " + output + " exists and is a " + out->TypeName() +
        ": pagewise only replaces regular files (it never writes through or replaces a " +
        "link, device or directory); name the file itself or a new path");
  }
  for (const std::string& in : inputs) {
    for (bool follow : {true, false}) {
      Result<sys::FileIdentity> id = sys::IdentifyPath(in, follow);
      if (!id.ok()) {
        if (id.status().code() == Code::kNotFound) continue;
        return id.status().WithContext("checking input " + in);
      }
      if (id->SameFile(*out)) {
        return Status::InvalidArgument("output " + output + " is the input " + in +
                                       " (same file, device:inode " + out->Text() +
                                       "): writing it would destroy the input; write to "
                                       "another path");
      }
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path,
                                                       const AtomicFileOptions& options) {
  Env* env = options.env != nullptr ? options.env : Env::Default();
  PW_RETURN_IF_ERROR(CheckOutputPath(path, options.inputs));
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  Status last;
  // A name collision means someone created that exact name (O_EXCL): take
  // another one. Eight collisions of 64 random bits do not happen by chance.
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::string temp = dir + "." + base + ".tmp-" + RandomHex();
    // Registered before it exists: an interrupt right after open still
    // removes it (unlinking a name that is not there yet is harmless).
    PW_ASSIGN_OR_RETURN(int slot, sys::RegisterTempFile(temp));
    Result<int> fd =
        env->Open(temp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY, options.mode);
    if (fd.ok()) {
      return std::unique_ptr<AtomicFile>(new AtomicFile(env, path, temp, *fd, slot));
    }
    sys::UnregisterTempFile(slot);
    last = fd.status();
    if (last.err() != EEXIST) break;
  }
  return last.WithContext("creating a temporary file for " + path +
                          " (is its directory there and writable?)");
}

AtomicFile::~AtomicFile() { Abandon(); }

Status AtomicFile::Write(const void* data, size_t len, uint64_t offset) {
  if (fd_ < 0) return Status::FailedPrecondition("write to " + path_ + " after commit or abandon");
  Status s = WriteFully(env_, fd_, data, len, static_cast<off_t>(offset));
  if (!s.ok()) return s.WithContext("writing " + path_ + " (temporary " + temp_ + ")");
  return Status::Ok();
}

Status AtomicFile::Truncate(uint64_t size) {
  if (fd_ < 0) return Status::FailedPrecondition("resize " + path_ + " after commit or abandon");
  Status s = env_->Ftruncate(fd_, static_cast<off_t>(size));
  if (!s.ok()) {
    return s.WithContext("setting the size of " + path_ + " (temporary " + temp_ + ") to " +
                         std::to_string(size));
  }
  return Status::Ok();
}

Status AtomicFile::Commit() {
  if (done_ || fd_ < 0) return Status::FailedPrecondition("commit of " + path_ + " twice");
  const std::string ctx = "publishing " + path_ + " (temporary " + temp_ + ")";
  Status s = env_->Fsync(fd_);
  const int fd = fd_;
  fd_ = -1;
  const Status c = env_->Close(fd);
  if (s.ok()) s = c;
  if (s.ok()) s = env_->Rename(temp_, path_);
  if (!s.ok()) {
    Abandon();
    return s.WithContext(ctx);
  }
  done_ = true;
  sys::UnregisterTempFile(slot_);
  slot_ = -1;
  s = env_->FsyncParentDir(path_);
  if (!s.ok()) {
    return s.WithContext(path_ +
                         " is complete but its directory could not be synced; it may not "
                         "survive a power loss");
  }
  return Status::Ok();
}

void AtomicFile::Abandon() {
  if (fd_ >= 0) {
    env_->Close(fd_).IgnoreError();  // the file is being discarded
    fd_ = -1;
  }
  if (!done_) {
    env_->Unlink(temp_).IgnoreError();  // best effort: a leftover is never a destination name
    done_ = true;
  }
  sys::UnregisterTempFile(slot_);
  slot_ = -1;
}

Status WriteFileAtomically(const std::string& path, std::string_view data,
                           const AtomicFileOptions& options) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> f, AtomicFile::Create(path, options));
  PW_RETURN_IF_ERROR(f->Write(data.data(), data.size(), 0));
  return f->Commit();
}

}  // namespace pagewise
