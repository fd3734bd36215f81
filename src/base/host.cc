// pagewise/host.h over src/sys: mappings through Env, temporary directories
// (sys::MakeTempDir), terminals (sys::IsTerminalFd), programs
// (sys::ChildProcess).
#include "pagewise/host.h"

#include <sys/mman.h>

#include <filesystem>
#include <system_error>
#include <utility>

#include "base/host_env.h"
#include "sys/child_process.h"
#include "sys/env.h"
#include "sys/process.h"

namespace pagewise {
namespace {

Status CheckShape(size_t length, const MapOptions& o) {
  const size_t page = PageSize();
  if (length == 0 || length % page != 0) {
    return Status::InvalidArgument("mapping length " + std::to_string(length) +
                                   " is not a non-zero multiple of the page size (" +
                                   std::to_string(page) + ")");
  }
  if (o.alignment != 0 && ((o.alignment & (o.alignment - 1)) != 0 || o.alignment % page != 0)) {
    return Status::InvalidArgument("mapping alignment " + std::to_string(o.alignment) +
                                   " is not a power of two multiple of the page size");
  }
  return Status::Ok();
}

// Maps `length` bytes with `flags` (and `fd`) at an address aligned to
// o.alignment: a PROT_NONE reservation of length + alignment, trimmed to
// the aligned part, is replaced by the mapping with MAP_FIXED. Nothing is
// left mapped after an error.
Result<char*> MapAligned(Env* env, size_t length, const MapOptions& o, int flags, int fd) {
  const int prot = PROT_READ | PROT_WRITE;
  const std::string what = "a mapping of " + std::to_string(length >> 10) + " KiB";
  if (o.alignment <= PageSize()) {
    Result<void*> p = env->Mmap(nullptr, length, prot, flags, fd, 0);
    if (!p.ok()) return p.status().WithContext(what);
    return static_cast<char*>(*p);
  }
  const size_t reserve = length + o.alignment;
  Result<void*> r =
      env->Mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (!r.ok()) return r.status().WithContext(what + " aligned to " + std::to_string(o.alignment));
  char* base = static_cast<char*>(*r);
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  char* aligned = reinterpret_cast<char*>((b + o.alignment - 1) & ~(o.alignment - 1));
  const size_t head = static_cast<size_t>(aligned - base);
  const size_t tail = reserve - head - length;
  // Trimming the reservation only gives address space back; should it fail,
  // the rest stays reserved (PROT_NONE, no memory) until the process ends.
  if (head > 0) env->Munmap(base, head).IgnoreError();
  if (tail > 0) env->Munmap(aligned + length, tail).IgnoreError();
  Result<void*> p = env->Mmap(aligned, length, prot, flags | MAP_FIXED, fd, 0);
  if (!p.ok()) {
    env->Munmap(aligned, length).IgnoreError();  // the reservation; the error is p's
    return p.status().WithContext(what);
  }
  return static_cast<char*>(*p);
}

void Advise(Env* env, char* p, size_t length, HugePages h) {
  if (h == HugePages::kDefault) return;
  // A hint (host.h): a kernel without THP refuses both with EINVAL, and the
  // mapping is as good without it.
  env->Madvise(p, length, h == HugePages::kNever ? MADV_NOHUGEPAGE : MADV_HUGEPAGE).IgnoreError();
}

}  // namespace

Result<MemoryMapping> MapAnonymous(Env* env, size_t length, const MapOptions& options) {
  PW_RETURN_IF_ERROR(CheckShape(length, options));
  PW_ASSIGN_OR_RETURN(char* p, MapAligned(env, length, options, MAP_PRIVATE | MAP_ANONYMOUS, -1));
  Advise(env, p, length, options.huge_pages);
  return MemoryMapping::Adopt(p, length);
}

Result<MemoryMapping> MapMemfd(Env* env, size_t length, const std::string& name,
                               const MapOptions& options) {
  PW_RETURN_IF_ERROR(CheckShape(length, options));
  PW_ASSIGN_OR_RETURN(int fd, env->MemfdCreate(name, MFD_CLOEXEC));
  Status st = env->Ftruncate(fd, static_cast<off_t>(length));
  if (!st.ok()) {
    env->Close(fd).IgnoreError();  // the error to report is ftruncate's
    return st.WithContext("sizing memfd " + name + " to " + std::to_string(length) + " bytes");
  }
  Result<char*> p = MapAligned(env, length, options, MAP_SHARED, fd);
  if (!p.ok()) {
    env->Close(fd).IgnoreError();  // the error to report is mmap's
    return p.status().WithContext("memfd " + name);
  }
  Advise(env, *p, length, options.huge_pages);
  return MemoryMapping::Adopt(*p, length, fd);
}

// ---- MemoryMapping --------------------------------------------------------------

Result<MemoryMapping> MemoryMapping::Anonymous(size_t length, const MapOptions& options) {
  return MapAnonymous(Env::Default(), length, options);
}

Result<MemoryMapping> MemoryMapping::Memfd(size_t length, const std::string& name,
                                           const MapOptions& options) {
  return MapMemfd(Env::Default(), length, name, options);
}

MemoryMapping::MemoryMapping(MemoryMapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      memfd_(std::exchange(other.memfd_, -1)) {}

MemoryMapping& MemoryMapping::operator=(MemoryMapping&& other) noexcept {
  if (this != &other) {
    Unmap().IgnoreError();  // nowhere to report it from an assignment
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    memfd_ = std::exchange(other.memfd_, -1);
  }
  return *this;
}

MemoryMapping::~MemoryMapping() { Unmap().IgnoreError(); }  // nowhere to report it

Region MemoryMapping::AsRegion(std::string name) const {
  Region r;
  r.address = reinterpret_cast<uint64_t>(data_);
  r.length = size_;
  r.offset = 0;
  r.page_size = PageSize();
  r.prot = PROT_READ | PROT_WRITE;
  r.kind = kind();
  r.name = std::move(name);
  return r;
}

Status MemoryMapping::Unmap() {
  Env* env = Env::Default();
  Status st;
  if (data_ != nullptr) st = env->Munmap(data_, size_);
  if (memfd_ >= 0) {
    Status c = env->Close(memfd_);
    if (st.ok()) st = c;
  }
  Release();
  return st;
}

void MemoryMapping::Release() {
  data_ = nullptr;
  size_ = 0;
  memfd_ = -1;
}

// ---- TempDirectory --------------------------------------------------------------

Result<TempDirectory> TempDirectory::Create(const std::string& prefix) {
  Result<std::string> path = sys::MakeTempDir(prefix);
  if (!path.ok()) return path.status().WithContext("creating a temporary directory");
  return TempDirectory(std::move(*path));
}

TempDirectory::TempDirectory(TempDirectory&& other) noexcept
    : path_(std::exchange(other.path_, std::string())), keep_(std::exchange(other.keep_, false)) {}

TempDirectory& TempDirectory::operator=(TempDirectory&& other) noexcept {
  if (this != &other) {
    if (!keep_) Remove().IgnoreError();  // nowhere to report it from an assignment
    path_ = std::exchange(other.path_, std::string());
    keep_ = std::exchange(other.keep_, false);
  }
  return *this;
}

TempDirectory::~TempDirectory() {
  if (!keep_) Remove().IgnoreError();  // nowhere to report it
}

Status TempDirectory::Remove() {
  if (path_.empty()) return Status::Ok();
  const std::string path = std::exchange(path_, std::string());
  keep_ = false;
  std::error_code ec;
  std::filesystem::remove_all(path, ec);  // removes symbolic links, never follows them
  if (ec) {
    return ErrnoStatus(ec.value(), "removing temporary directory " + path,
                       "remove it by hand once what keeps it busy is gone");
  }
  return Status::Ok();
}

// ---- terminals and programs --------------------------------------------------------

bool IsTerminal(int fd) { return sys::IsTerminalFd(fd); }

Result<ProgramOutput> RunProgram(const std::string& path, const std::vector<std::string>& args) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<sys::ChildProcess> child,
                      sys::ChildProcess::Spawn(path, args));
  ProgramOutput out;
  out.stdout_text = child->ReadRest();
  PW_ASSIGN_OR_RETURN(out.exit_status, child->Wait());
  return out;
}

}  // namespace pagewise
