// AtomicFile: the one way pagewise creates an output file.
//
// The bytes go to a temporary file in the destination's directory, created
// with O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name
// (".<name>.tmp-<16 random hex digits>", from getrandom), so that nothing
// planted in advance (a symbolic link, a file of another user) can be
// written through or reused. Commit() makes it the destination in one
// step: fsync, rename over the destination, fsync of the directory.
// Until then the destination is untouched; after a failure, an Abandon(),
// the object's destruction, or SIGINT/SIGTERM/SIGHUP (sys/temp_cleanup.h),
// the temporary file is gone.
//
// Refusals at Create (kInvalidArgument, naming the paths):
//   - a destination that exists and is not a regular file (a symbolic
//     link, a directory, a device, a socket...): pagewise replaces files,
//     it never writes through or replaces anything else;
//   - a destination that is one of `inputs`, compared by device and inode
//     (so also through hard links and symbolic links), or whose directory
//     entry is one of the inputs' (a symbolic link an input path goes
//     through): writing there would destroy an input.
//
// Thread safety: an AtomicFile is used by one thread at a time, except
// Write(), which (like pwrite) may be called from several threads at once
// for disjoint ranges.
#ifndef PAGEWISE_BASE_ATOMIC_FILE_H_
#define PAGEWISE_BASE_ATOMIC_FILE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/output_file.h"
#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise {

struct AtomicFileOptions {
  mode_t mode = 0644;  // of the new file (less the umask)
  Env* env = nullptr;  // nullptr: Env::Default()
  // Files this output must not replace (see above). Paths that do not
  // exist are ignored.
  std::vector<std::string> inputs;
};

class AtomicFile {
 public:
  // Creates the temporary file for `path`. Errors: the refusals above
  // (kInvalidArgument), the directory is missing or not writable (from
  // open, with a hint), too many temporary files at once
  // (kResourceExhausted).
  static Result<std::unique_ptr<AtomicFile>> Create(const std::string& path,
                                                    const AtomicFileOptions& options = {});

  // Abandon()s unless committed.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // The temporary file's descriptor (valid until Commit or Abandon).
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

  // Writes all of [data, data+len) at `offset` of the temporary file.
  Status Write(const void* data, size_t len, uint64_t offset);
  // Sets the temporary file's size (sparse extension).
  Status Truncate(uint64_t size);

  // fsync, close, rename over path(), fsync of the directory. On error the
  // destination is as it was and the temporary file is removed, except
  // when only the directory fsync failed: the new file is then in place
  // (complete and readable) but may not survive a power loss; the error
  // says so. May be called once.
  Status Commit();

  // Closes and removes the temporary file. Idempotent.
  void Abandon();

 private:
  AtomicFile(Env* env, std::string path, std::string temp, int fd, int slot)
      : env_(env), path_(std::move(path)), temp_(std::move(temp)), fd_(fd), slot_(slot) {}

  Env* env_;
  std::string path_;
  std::string temp_;
  int fd_;
  int slot_;  // sys/temp_cleanup.h registration, -1 when none
  bool done_ = false;
};

// Writes `data` as the whole content of `path` through an AtomicFile.
Status WriteFileAtomically(const std::string& path, std::string_view data,
                           const AtomicFileOptions& options = {});

}  // namespace pagewise

#endif  // PAGEWISE_BASE_ATOMIC_FILE_H_
