// Guest: a tiny KVM guest that runs pagewise's own CPL3 routines over host
// memory, so that memory pagewise tracks or restores is touched the way a
// VMM's guest touches it (by KVM, through get_user_pages, on the vCPU's
// behalf) rather than by the CPU in this process.
//
// Shape. One vCPU in 64-bit long mode that starts directly at CPL3: the
// segment registers are loaded through KVM_SET_SREGS (no descriptor tables
// in guest memory), RFLAGS.IOPL = 3 so that the user-mode code may leave
// with an OUT to kExitPort, and a guest page table identity-maps guest
// physical [0, 64 GiB) with 2 MiB pages. On nested KVM of the PVM flavour
// (this project's machines) ring-0 code is emulated about 1000x slower
// than ring-3 code runs, so the guest never enters ring 0: every routine
// is user code, started by setting RIP and its argument registers, ending
// with the OUT. Slot 0 ("system") holds the page tables, the routines and
// an argument table, in memory the Guest owns (so neither KVM's
// accessed/dirty-bit updates of the guest page table nor the argument
// tables touch memory under test). AddMemory maps caller memory as further
// slots at guest physical addresses congruent to the host address modulo
// 1 GiB (so KVM may use huge mappings where the host memory is huge).
//
// Routines (each one KVM_RUN): Compare (qword by qword: the first offset
// where two guest ranges differ, e.g. restored memory against a reference
// copy of the source mapped read-only), Sum, WriteList (one qword store
// per listed address), WritePairs (a listed value to each listed address)
// and Touch (one load or store per stride).
//
// Failure: a guest exception (triple fault), an access outside every slot
// (MMIO exit) or a KVM_RUN error is an error naming the routine, RIP and
// the exit; KVM_RUN's EFAULT (e.g. a UFFD_USER_MODE_ONLY userfaultfd on
// guest memory) says so (sys/kvm.h).
//
// Thread safety: one thread at a time (the vCPU's ioctls). The memory
// given to AddMemory must stay mapped while the Guest exists.
#ifndef PAGEWISE_KVM_GUEST_H_
#define PAGEWISE_KVM_GUEST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "pagewise/status.h"
#include "sys/kvm.h"

namespace pagewise::kvm {

inline constexpr uint16_t kExitPort = 0x10;
// Every guest physical address below this is mapped by the guest page table.
inline constexpr uint64_t kGuestPhysLimit = 64ULL << 30;

struct GuestOptions {
  // KVM_CLEAR_DIRTY_LOG (manual protection) for slots with dirty logging.
  bool manual_dirty_protect = false;
};

// One slot AddMemory made.
struct GuestSlot {
  uint32_t slot = 0;
  uint64_t guest_phys = 0;
  uint64_t host_addr = 0;
  uint64_t size = 0;
  bool log_dirty = false;
};

class Guest {
 public:
  // Opens /dev/kvm (kNotSupported naming how to get it when missing),
  // creates the VM, its system slot and the vCPU.
  static Result<std::unique_ptr<Guest>> Create(const GuestOptions& options = {});
  ~Guest();
  Guest(const Guest&) = delete;
  Guest& operator=(const Guest&) = delete;

  // Maps host [host_addr, host_addr+size) (page aligned, mapped, and kept
  // mapped by the caller) into the guest; returns its guest physical
  // address. log_dirty: KVM_MEM_LOG_DIRTY_PAGES on the slot.
  Result<GuestSlot> AddMemory(uint64_t host_addr, uint64_t size, bool log_dirty = false);
  // Turns dirty logging of an AddMemory slot on or off (the slot is set
  // again with the other flag).
  Status SetDirtyLogging(const GuestSlot& slot, bool on);

  // First byte offset (a multiple of 8) at which [a, a+len) and [b, b+len)
  // differ as the guest reads them, or -1 when equal. len a multiple of 8.
  // *guest_value (optional) receives the qword the guest read at `a` there.
  Result<int64_t> Compare(uint64_t guest_a, uint64_t guest_b, uint64_t len,
                          uint64_t* guest_value = nullptr);
  // Sum (mod 2^64) of the qwords of [a, a+len).
  Result<uint64_t> Sum(uint64_t guest_a, uint64_t len);
  // Stores `value` at each guest physical address (8-byte aligned).
  Status WriteList(const std::vector<uint64_t>& guest_addrs, uint64_t value);
  // Stores pairs[i].value at pairs[i].guest_addr, in order (8-byte aligned).
  struct Store {
    uint64_t guest_addr;
    uint64_t value;
  };
  Status WritePairs(const std::vector<Store>& stores);
  // One 8-byte load (write = false) or store of `value` every `stride`
  // bytes of [a, a+len).
  Status Touch(uint64_t guest_a, uint64_t len, uint64_t stride, bool write, uint64_t value = 0);

  // The VM, for its dirty log (GetDirtyLog/ClearDirtyLog on a slot's id).
  const sys::KvmVm& vm() const { return vm_; }
  const std::vector<GuestSlot>& slots() const { return slots_; }

 private:
  Guest() = default;
  Status Setup(const GuestOptions& options);
  // Runs the routine at code offset `entry` with `in` as argument
  // registers; returns the registers at the exit.
  Result<sys::VcpuRegs> RunRoutine(const char* name, size_t entry, sys::VcpuRegs in);

  sys::Kvm kvm_;
  sys::KvmVm vm_;
  sys::KvmVcpu vcpu_;
  char* system_ = nullptr;  // slot 0, owned
  size_t system_len_ = 0;
  std::vector<GuestSlot> slots_;
  uint64_t next_guest_phys_ = 4ULL << 30;
};

}  // namespace pagewise::kvm

#endif  // PAGEWISE_KVM_GUEST_H_
