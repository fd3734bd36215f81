// KVM ioctls: /dev/kvm, VMs, memory slots, dirty log and vCPUs.
#include "sys/kvm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <utility>

namespace pagewise::sys {
namespace {

constexpr int kKvmApiVersion = 12;

// ioctl with EINTR retried (every KVM ioctl but KVM_RUN is restartable).
int IoctlRetry(int fd, unsigned long request, void* arg) {
  int r;
  do {
    r = ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

void ToKvm(const VcpuSegment& in, struct kvm_segment* out) {
  out->base = in.base;
  out->limit = in.limit;
  out->selector = in.selector;
  out->type = in.type;
  out->present = in.present;
  out->dpl = in.dpl;
  out->db = in.db;
  out->s = in.s;
  out->l = in.l;
  out->g = in.g;
  out->avl = 0;
  out->unusable = in.present ? 0 : 1;
}

VcpuSegment FromKvm(const struct kvm_segment& in) {
  VcpuSegment out;
  out.base = in.base;
  out.limit = in.limit;
  out.selector = in.selector;
  out.type = in.type;
  out.present = in.present;
  out.dpl = in.dpl;
  out.db = in.db;
  out.s = in.s;
  out.l = in.l;
  out.g = in.g;
  return out;
}

void CloseFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

}  // namespace

const char* KvmHowToGet() {
  return "run on a kernel with KVM (CONFIG_KVM) and kvm_intel or kvm_amd loaded (on a virtual "
         "machine: nested virtualization enabled), and give this user read-write access to "
         "/dev/kvm (e.g. the kvm group)";
}

std::string VcpuExit::Describe() const {
  char buf[128];
  switch (reason) {
    case Reason::kIo:
      snprintf(buf, sizeof(buf), "io port 0x%x %s size %u value 0x%x", io_port,
               io_out ? "out" : "in", io_size, io_value);
      return buf;
    case Reason::kMmio:
      snprintf(buf, sizeof(buf), "mmio %s at guest physical 0x%" PRIx64 " (no memory slot there)",
               mmio_write ? "write" : "read", mmio_address);
      return buf;
    case Reason::kHlt:
      return "hlt";
    case Reason::kShutdown:
      return "shutdown (the guest triple-faulted: an exception it could not deliver)";
    case Reason::kInternalError:
      snprintf(buf, sizeof(buf), "internal error, suberror %" PRIu64, detail);
      return buf;
    case Reason::kFailEntry:
      snprintf(buf, sizeof(buf), "entry failed, hardware reason 0x%" PRIx64, detail);
      return buf;
    case Reason::kOther:
      break;
  }
  snprintf(buf, sizeof(buf), "exit reason %u", raw_reason);
  return buf;
}

// ---- Kvm ---------------------------------------------------------------------

Result<Kvm> Kvm::Open() {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return Status(Code::kNotSupported, err,
                  std::string("KVM is unavailable: cannot open /dev/kvm (") + strerror(err) +
                      "); " + KvmHowToGet());
  }
  Kvm kvm(fd, 0);
  const int version = ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != kKvmApiVersion) {
    return Status::NotSupported("KVM API version " + std::to_string(version) + " at /dev/kvm; " +
                                "pagewise needs version " + std::to_string(kKvmApiVersion));
  }
  if (kvm.CheckExtension(KVM_CAP_USER_MEMORY) <= 0) {
    return Status::NotSupported("KVM at /dev/kvm lacks KVM_CAP_USER_MEMORY");
  }
  const int run_size = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(struct kvm_run))) {
    return ErrnoStatus(run_size < 0 ? errno : EINVAL, "KVM_GET_VCPU_MMAP_SIZE");
  }
  kvm.run_size_ = static_cast<size_t>(run_size);
  return kvm;
}

Kvm::Kvm(Kvm&& o) noexcept : fd_(o.fd_), run_size_(o.run_size_) { o.fd_ = -1; }
Kvm& Kvm::operator=(Kvm&& o) noexcept {
  if (this != &o) {
    Reset();
    fd_ = std::exchange(o.fd_, -1);
    run_size_ = o.run_size_;
  }
  return *this;
}
Kvm::~Kvm() { Reset(); }
void Kvm::Reset() { CloseFd(&fd_); }

int Kvm::CheckExtension(long capability) const {
  const int r = ioctl(fd_, KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

bool Kvm::has_manual_dirty_protect() const {
  return CheckExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0;
}

Result<KvmVm> Kvm::CreateVm() const {
  int fd;
  do {
    fd = ioctl(fd_, KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "KVM_CREATE_VM", KvmHowToGet());
  return KvmVm(fd, run_size_);
}

// ---- KvmVm -------------------------------------------------------------------

KvmVm::KvmVm(KvmVm&& o) noexcept : fd_(o.fd_), run_size_(o.run_size_) { o.fd_ = -1; }
KvmVm& KvmVm::operator=(KvmVm&& o) noexcept {
  if (this != &o) {
    Reset();
    fd_ = std::exchange(o.fd_, -1);
    run_size_ = o.run_size_;
  }
  return *this;
}
KvmVm::~KvmVm() { Reset(); }
void KvmVm::Reset() { CloseFd(&fd_); }

Status KvmVm::SetMemorySlot(uint32_t slot, uint64_t guest_phys, uint64_t size, uint64_t host_addr,
                            bool log_dirty) const {
  struct kvm_userspace_memory_region r = {};
  r.slot = slot;
  r.flags = log_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0;
  r.guest_phys_addr = guest_phys;
  r.memory_size = size;
  r.userspace_addr = host_addr;
  if (IoctlRetry(fd_, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
    char what[160];
    snprintf(what, sizeof(what),
             "KVM_SET_USER_MEMORY_REGION slot %u guest 0x%" PRIx64 " size 0x%" PRIx64
             " host 0x%" PRIx64,
             slot, guest_phys, size, host_addr);
    return ErrnoStatus(errno, what,
                       "addresses and size must be page aligned, slots must not overlap");
  }
  return Status::Ok();
}

Status KvmVm::EnableManualDirtyProtect() const {
  struct kvm_enable_cap cap = {};
  cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
  cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
  if (IoctlRetry(fd_, KVM_ENABLE_CAP, &cap) < 0) {
    const int err = errno;
    if (err == EINVAL) {
      return Status(Code::kNotSupported, err,
                    "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2) refused: this kernel's KVM has no "
                    "KVM_CLEAR_DIRTY_LOG (Linux 5.3+)");
    }
    return ErrnoStatus(err, "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)");
  }
  return Status::Ok();
}

Status KvmVm::GetDirtyLog(uint32_t slot, uint64_t* bitmap) const {
  struct kvm_dirty_log log = {};
  log.slot = slot;
  log.dirty_bitmap = bitmap;
  if (IoctlRetry(fd_, KVM_GET_DIRTY_LOG, &log) < 0) {
    return ErrnoStatus(errno, "KVM_GET_DIRTY_LOG slot " + std::to_string(slot),
                       "the slot must exist and have KVM_MEM_LOG_DIRTY_PAGES");
  }
  return Status::Ok();
}

Status KvmVm::ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                            uint64_t* bitmap) const {
  struct kvm_clear_dirty_log log = {};
  log.slot = slot;
  log.first_page = first_page;
  log.num_pages = num_pages;
  log.dirty_bitmap = bitmap;
  if (IoctlRetry(fd_, KVM_CLEAR_DIRTY_LOG, &log) < 0) {
    return ErrnoStatus(errno,
                       "KVM_CLEAR_DIRTY_LOG slot " + std::to_string(slot) + " pages " +
                           std::to_string(first_page) + "+" + std::to_string(num_pages),
                       "enable manual dirty protection first; first_page must be a multiple of 64");
  }
  return Status::Ok();
}

Result<KvmVcpu> KvmVm::CreateVcpu(uint32_t id) const {
  int fd;
  do {
    fd = ioctl(fd_, KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "KVM_CREATE_VCPU " + std::to_string(id));
  void* run = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "mmap of the vCPU's kvm_run area");
  }
  return KvmVcpu(fd, run, run_size_);
}

// ---- KvmVcpu -----------------------------------------------------------------

KvmVcpu::KvmVcpu(KvmVcpu&& o) noexcept : fd_(o.fd_), run_(o.run_), run_size_(o.run_size_) {
  o.fd_ = -1;
  o.run_ = nullptr;
}
KvmVcpu& KvmVcpu::operator=(KvmVcpu&& o) noexcept {
  if (this != &o) {
    Reset();
    fd_ = std::exchange(o.fd_, -1);
    run_ = std::exchange(o.run_, nullptr);
    run_size_ = o.run_size_;
  }
  return *this;
}
KvmVcpu::~KvmVcpu() { Reset(); }
void KvmVcpu::Reset() {
  if (run_ != nullptr) munmap(run_, run_size_);
  run_ = nullptr;
  CloseFd(&fd_);
}

Status KvmVcpu::GetRegs(VcpuRegs* regs) const {
  struct kvm_regs r = {};
  if (IoctlRetry(fd_, KVM_GET_REGS, &r) < 0) return ErrnoStatus(errno, "KVM_GET_REGS");
  regs->rax = r.rax, regs->rbx = r.rbx, regs->rcx = r.rcx, regs->rdx = r.rdx;
  regs->rsi = r.rsi, regs->rdi = r.rdi, regs->rsp = r.rsp, regs->rbp = r.rbp;
  regs->r8 = r.r8, regs->r9 = r.r9, regs->r10 = r.r10, regs->r11 = r.r11;
  regs->r12 = r.r12, regs->r13 = r.r13, regs->r14 = r.r14, regs->r15 = r.r15;
  regs->rip = r.rip, regs->rflags = r.rflags;
  return Status::Ok();
}

Status KvmVcpu::SetRegs(const VcpuRegs& regs) const {
  struct kvm_regs r = {};
  r.rax = regs.rax, r.rbx = regs.rbx, r.rcx = regs.rcx, r.rdx = regs.rdx;
  r.rsi = regs.rsi, r.rdi = regs.rdi, r.rsp = regs.rsp, r.rbp = regs.rbp;
  r.r8 = regs.r8, r.r9 = regs.r9, r.r10 = regs.r10, r.r11 = regs.r11;
  r.r12 = regs.r12, r.r13 = regs.r13, r.r14 = regs.r14, r.r15 = regs.r15;
  r.rip = regs.rip, r.rflags = regs.rflags;
  if (IoctlRetry(fd_, KVM_SET_REGS, &r) < 0) return ErrnoStatus(errno, "KVM_SET_REGS");
  return Status::Ok();
}

Status KvmVcpu::GetSpecialRegs(VcpuSpecialRegs* sregs) const {
  struct kvm_sregs s = {};
  if (IoctlRetry(fd_, KVM_GET_SREGS, &s) < 0) return ErrnoStatus(errno, "KVM_GET_SREGS");
  sregs->cs = FromKvm(s.cs), sregs->ds = FromKvm(s.ds), sregs->es = FromKvm(s.es);
  sregs->fs = FromKvm(s.fs), sregs->gs = FromKvm(s.gs), sregs->ss = FromKvm(s.ss);
  sregs->cr0 = s.cr0, sregs->cr3 = s.cr3, sregs->cr4 = s.cr4, sregs->efer = s.efer;
  return Status::Ok();
}

Status KvmVcpu::SetSpecialRegs(const VcpuSpecialRegs& sregs) const {
  struct kvm_sregs s = {};
  if (IoctlRetry(fd_, KVM_GET_SREGS, &s) < 0) return ErrnoStatus(errno, "KVM_GET_SREGS");
  ToKvm(sregs.cs, &s.cs), ToKvm(sregs.ds, &s.ds), ToKvm(sregs.es, &s.es);
  ToKvm(sregs.fs, &s.fs), ToKvm(sregs.gs, &s.gs), ToKvm(sregs.ss, &s.ss);
  s.cr0 = sregs.cr0, s.cr3 = sregs.cr3, s.cr4 = sregs.cr4, s.efer = sregs.efer;
  if (IoctlRetry(fd_, KVM_SET_SREGS, &s) < 0) {
    return ErrnoStatus(errno, "KVM_SET_SREGS", "the control registers describe an invalid mode");
  }
  return Status::Ok();
}

Status KvmVcpu::Run(VcpuExit* exit) const {
  *exit = VcpuExit();
  if (ioctl(fd_, KVM_RUN, 0) < 0) {
    const int err = errno;
    if (err == EINTR) return Status(Code::kRetry, err, "KVM_RUN interrupted by a signal");
    if (err == EFAULT) {
      return Status(Code::kIoError, err,
                    "KVM_RUN: KVM could not fault in guest memory (EFAULT): the host mapping "
                    "behind a memory slot is gone or refused a kernel-mode fault. A userfaultfd "
                    "created with UFFD_USER_MODE_ONLY (or with UFFD_FEATURE_SIGBUS) never sees "
                    "KVM's faults: create it without that flag");
    }
    return ErrnoStatus(err, "KVM_RUN");
  }
  const struct kvm_run* run = static_cast<const struct kvm_run*>(run_);
  exit->raw_reason = run->exit_reason;
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      exit->reason = VcpuExit::Reason::kIo;
      exit->io_port = run->io.port;
      exit->io_size = run->io.size;
      exit->io_out = run->io.direction == KVM_EXIT_IO_OUT;
      if (exit->io_out && run->io.size <= 4 && run->io.data_offset + 4 <= run_size_) {
        const uint8_t* data = static_cast<const uint8_t*>(run_) + run->io.data_offset;
        uint32_t v = 0;
        for (uint8_t i = 0; i < run->io.size; ++i) v |= static_cast<uint32_t>(data[i]) << (8 * i);
        exit->io_value = v;
      }
      break;
    }
    case KVM_EXIT_MMIO:
      exit->reason = VcpuExit::Reason::kMmio;
      exit->mmio_address = run->mmio.phys_addr;
      exit->mmio_write = run->mmio.is_write != 0;
      break;
    case KVM_EXIT_HLT:
      exit->reason = VcpuExit::Reason::kHlt;
      break;
    case KVM_EXIT_SHUTDOWN:
      exit->reason = VcpuExit::Reason::kShutdown;
      break;
    case KVM_EXIT_INTERNAL_ERROR:
      exit->reason = VcpuExit::Reason::kInternalError;
      exit->detail = run->internal.suberror;
      break;
    case KVM_EXIT_FAIL_ENTRY:
      exit->reason = VcpuExit::Reason::kFailEntry;
      exit->detail = run->fail_entry.hardware_entry_failure_reason;
      break;
    default:
      exit->reason = VcpuExit::Reason::kOther;
      break;
  }
  return Status::Ok();
}

}  // namespace pagewise::sys
