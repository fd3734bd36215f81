// KVM: the /dev/kvm ioctls pagewise needs to run a guest over memory it
// tracks or restores (the test VMM, `pagewise check --scenario kvm`, and
// `pagewise bench kinds`), behind three small owning classes.
//
//   Kvm      /dev/kvm itself: API version, capabilities, VM creation.
//   KvmVm    one VM: memory slots (host virtual ranges mapped at guest
//            physical addresses, optionally with KVM_MEM_LOG_DIRTY_PAGES),
//            the dirty log (KVM_GET_DIRTY_LOG, and KVM_CLEAR_DIRTY_LOG once
//            manual protection is enabled), vCPU creation.
//   KvmVcpu  one vCPU: general and special registers, KVM_RUN and the exit
//            it reports (its kvm_run area is mapped and owned here).
//
// Guest memory is the caller's: a memory slot points at host memory the
// caller mapped and keeps mapped while the VM exists. KVM reaches it from
// the kernel (get_user_pages on the vCPU's behalf), so a userfaultfd that
// registers it sees KVM's faults as kernel-mode faults; one created with
// UFFD_USER_MODE_ONLY never does, and KVM_RUN then fails with EFAULT
// (RunStatus says so). No linux/kvm.h types appear here: the register and
// exit structs below mirror the fields pagewise uses.
//
// Errors: /dev/kvm missing or unusable is kNotSupported naming how to get
// it; ioctl failures go through ErrnoStatus naming the ioctl.
//
// Thread safety: Kvm and KvmVm methods may be called from any thread
// (independent ioctls on one fd; the kernel serialises slot changes).
// A KvmVcpu is used from one thread at a time (KVM requires every vCPU
// ioctl to come from one thread; pagewise uses the creating thread or one
// thread after it). All three are move-only and close their fds when
// destroyed; a VM outlives nothing it created (destroy vCPUs first, or
// together: the kernel keeps the VM until its last fd is closed).
#ifndef PAGEWISE_SYS_KVM_H_
#define PAGEWISE_SYS_KVM_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::sys {

// General-purpose registers, instruction pointer and flags (struct kvm_regs).
struct VcpuRegs {
  uint64_t rax = 0, rbx = 0, rcx = 0, rdx = 0, rsi = 0, rdi = 0, rsp = 0, rbp = 0;
  uint64_t r8 = 0, r9 = 0, r10 = 0, r11 = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0;
  uint64_t rip = 0, rflags = 0x2;  // bit 1 of RFLAGS is reserved as one
};

// One segment register with its hidden (descriptor cache) part, as
// KVM_SET_SREGS loads it without a descriptor table in guest memory.
struct VcpuSegment {
  uint64_t base = 0;
  uint32_t limit = 0;
  uint16_t selector = 0;
  uint8_t type = 0;  // descriptor type bits (e.g. 0xb code execute/read accessed)
  uint8_t present = 0, dpl = 0, db = 0, s = 0, l = 0, g = 0;
};

// The special registers pagewise sets (struct kvm_sregs); everything else
// keeps the value KVM_GET_SREGS returned.
struct VcpuSpecialRegs {
  VcpuSegment cs, ds, es, fs, gs, ss;
  uint64_t cr0 = 0, cr3 = 0, cr4 = 0, efer = 0;
};

// Why KVM_RUN returned (struct kvm_run's exit_reason and the fields of the
// exits pagewise uses).
struct VcpuExit {
  enum class Reason { kIo, kMmio, kHlt, kShutdown, kInternalError, kFailEntry, kOther };
  Reason reason = Reason::kOther;
  uint32_t raw_reason = 0;  // KVM_EXIT_*
  // kIo: port, size (1, 2, 4) and direction; for an OUT, the value written.
  uint16_t io_port = 0;
  uint8_t io_size = 0;
  bool io_out = false;
  uint32_t io_value = 0;
  // kMmio: the guest physical address and direction.
  uint64_t mmio_address = 0;
  bool mmio_write = false;
  // kInternalError: suberror; kFailEntry: hardware reason.
  uint64_t detail = 0;

  // "io port 0x10 out", "shutdown (triple fault)", ...
  std::string Describe() const;
};

class KvmVcpu {
 public:
  KvmVcpu() = default;
  KvmVcpu(KvmVcpu&& o) noexcept;
  KvmVcpu& operator=(KvmVcpu&& o) noexcept;
  KvmVcpu(const KvmVcpu&) = delete;
  KvmVcpu& operator=(const KvmVcpu&) = delete;
  ~KvmVcpu();

  bool valid() const { return fd_ >= 0; }

  Status GetRegs(VcpuRegs* regs) const;
  Status SetRegs(const VcpuRegs& regs) const;
  // Reads the current special registers, replaces the fields of `sregs`
  // and writes them back (KVM_GET_SREGS + KVM_SET_SREGS).
  Status SetSpecialRegs(const VcpuSpecialRegs& sregs) const;
  Status GetSpecialRegs(VcpuSpecialRegs* sregs) const;

  // KVM_RUN until the guest exits to user space; *exit says why. EINTR
  // (a signal) is kRetry; EFAULT (KVM could not fault in guest memory: the
  // host mapping is gone, a userfaultfd refused a kernel-mode fault -
  // UFFD_USER_MODE_ONLY -, or a SIGBUS-mode userfaultfd) is kIoError with a
  // message naming those causes.
  Status Run(VcpuExit* exit) const;

 private:
  friend class KvmVm;
  KvmVcpu(int fd, void* run, size_t run_size) : fd_(fd), run_(run), run_size_(run_size) {}
  void Reset();

  int fd_ = -1;
  void* run_ = nullptr;  // the mapped struct kvm_run
  size_t run_size_ = 0;
};

class KvmVm {
 public:
  KvmVm() = default;
  KvmVm(KvmVm&& o) noexcept;
  KvmVm& operator=(KvmVm&& o) noexcept;
  KvmVm(const KvmVm&) = delete;
  KvmVm& operator=(const KvmVm&) = delete;
  ~KvmVm();

  bool valid() const { return fd_ >= 0; }

  // Maps host [host_addr, host_addr+size) at guest physical `guest_phys`
  // as slot `slot` (KVM_SET_USER_MEMORY_REGION). All three page aligned;
  // size 0 deletes the slot. log_dirty: KVM_MEM_LOG_DIRTY_PAGES (KVM then
  // maps the slot with 4 KiB pages and write-protects it to log writes).
  Status SetMemorySlot(uint32_t slot, uint64_t guest_phys, uint64_t size, uint64_t host_addr,
                       bool log_dirty) const;

  // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_GET_DIRTY_LOG then only reports,
  // and KVM_CLEAR_DIRTY_LOG re-protects what the caller clears. Call before
  // any slot has dirty logging. kNotSupported when the kernel lacks it.
  Status EnableManualDirtyProtect() const;

  // KVM_GET_DIRTY_LOG of `slot` into `bitmap` (one bit per 4 KiB guest page,
  // at least ceil(pages/64) words, as the slot's size gives). Without manual
  // protection this also clears and re-protects the log.
  Status GetDirtyLog(uint32_t slot, uint64_t* bitmap) const;
  // KVM_CLEAR_DIRTY_LOG: clears (and write-protects again) the pages of
  // [first_page, first_page+num_pages) whose bits are set in `bitmap`
  // (bit 0 = first_page). first_page must be a multiple of 64; num_pages a
  // multiple of 64 unless the range ends at the slot's end.
  Status ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                       uint64_t* bitmap) const;

  // KVM_CREATE_VCPU with id `id`, and maps its kvm_run area.
  Result<KvmVcpu> CreateVcpu(uint32_t id) const;

 private:
  friend class Kvm;
  KvmVm(int fd, size_t run_size) : fd_(fd), run_size_(run_size) {}
  void Reset();

  int fd_ = -1;
  size_t run_size_ = 0;
};

class Kvm {
 public:
  // Opens /dev/kvm and checks the API version (12) and the capabilities
  // pagewise needs (user memory, a TSS-less 64-bit guest's ioctls).
  // kNotSupported when /dev/kvm is missing or refuses us, naming how to get
  // it (a kernel with KVM, kvm_intel/kvm_amd loaded, nested virtualization
  // on a VM, read-write access to /dev/kvm).
  static Result<Kvm> Open();

  Kvm() = default;
  Kvm(Kvm&& o) noexcept;
  Kvm& operator=(Kvm&& o) noexcept;
  Kvm(const Kvm&) = delete;
  Kvm& operator=(const Kvm&) = delete;
  ~Kvm();

  // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (KVM_CLEAR_DIRTY_LOG).
  bool has_manual_dirty_protect() const;

  // KVM_CREATE_VM (default machine type).
  Result<KvmVm> CreateVm() const;

 private:
  Kvm(int fd, size_t run_size) : fd_(fd), run_size_(run_size) {}
  void Reset();
  // KVM_CHECK_EXTENSION: > 0 if the capability is there (its value), 0 if not.
  int CheckExtension(long capability) const;

  int fd_ = -1;
  size_t run_size_ = 0;
};

// Where to get /dev/kvm (for skip and error messages).
const char* KvmHowToGet();

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_KVM_H_
