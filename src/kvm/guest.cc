// Guest: long-mode CPL3 routines run through KVM over host memory.
#include "kvm/guest.h"

#include <sys/mman.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "sys/env.h"

// The guest's routines: position-independent user-mode x86-64 code, copied
// into the system slot. Each takes its arguments in registers (see the
// Guest methods), leaves its result in RAX (and RBX) and exits to the host
// with an OUT to kExitPort (allowed at CPL3 because RFLAGS.IOPL is 3). The
// trailing jump only matters if a routine were resumed after its exit.
extern "C" const char pagewise_guest_code_start[], pagewise_guest_code_end[];
extern "C" const char pagewise_guest_compare[], pagewise_guest_sum[], pagewise_guest_write_list[],
    pagewise_guest_write_pairs[], pagewise_guest_touch[];
asm(R"(
  .pushsection .rodata.pagewise_guest, "a"
  .globl pagewise_guest_code_start, pagewise_guest_code_end
  .globl pagewise_guest_compare, pagewise_guest_sum, pagewise_guest_write_list
  .globl pagewise_guest_touch, pagewise_guest_write_pairs
pagewise_guest_code_start:

# compare: rdi = a, rsi = b, rdx = len. rax = first differing offset or -1,
# rbx = the qword read at a + rax.
pagewise_guest_compare:
  xor %eax, %eax
1:
  cmp %rdx, %rax
  jae 2f
  mov (%rdi,%rax), %rbx
  cmp (%rsi,%rax), %rbx
  jne 3f
  add $8, %rax
  jmp 1b
2:
  mov $-1, %rax
3:
  mov $0x10, %dx
  out %al, %dx
  jmp 3b

# sum: rdi = a, rsi = len. rax = sum of the qwords.
pagewise_guest_sum:
  xor %eax, %eax
  xor %ecx, %ecx
1:
  cmp %rsi, %rcx
  jae 2f
  add (%rdi,%rcx), %rax
  add $8, %rcx
  jmp 1b
2:
  mov $0x10, %dx
  out %al, %dx
  jmp 2b

# write_list: rdi = table of addresses, rsi = count, rdx = value.
pagewise_guest_write_list:
  xor %ecx, %ecx
1:
  cmp %rsi, %rcx
  jae 2f
  mov (%rdi,%rcx,8), %r8
  mov %rdx, (%r8)
  inc %rcx
  jmp 1b
2:
  mov %rcx, %rax
  mov $0x10, %dx
  out %al, %dx
  jmp 2b

# write_pairs: rdi = table of {address, value}, rsi = count.
pagewise_guest_write_pairs:
  xor %ecx, %ecx
1:
  cmp %rsi, %rcx
  jae 2f
  mov %rcx, %rax
  shl $4, %rax
  mov (%rdi,%rax), %r8
  mov 8(%rdi,%rax), %r9
  mov %r9, (%r8)
  inc %rcx
  jmp 1b
2:
  mov %rcx, %rax
  mov $0x10, %dx
  out %al, %dx
  jmp 2b

# touch: rdi = a, rsi = len, rdx = stride, rcx = write?, r8 = value.
pagewise_guest_touch:
  xor %eax, %eax
  xor %r9d, %r9d
1:
  cmp %rsi, %r9
  jae 3f
  test %rcx, %rcx
  jz 2f
  mov %r8, (%rdi,%r9)
  add %rdx, %r9
  jmp 1b
2:
  add (%rdi,%r9), %rax
  add %rdx, %r9
  jmp 1b
3:
  mov $0x10, %dx
  out %al, %dx
  jmp 3b

pagewise_guest_code_end:
  .popsection
)");

namespace pagewise::kvm {
namespace {

// System slot layout (guest physical = offset in the slot).
constexpr uint64_t kPml4 = 0x1000;
constexpr uint64_t kPdpt = 0x2000;
constexpr uint64_t kPds = 0x3000;  // one page directory per GiB
constexpr uint64_t kCode = 0x50000;
constexpr uint64_t kStackTop = 0x70000;
constexpr uint64_t kTable = 0x100000;  // WriteList's argument table
constexpr size_t kSystemLen = 4 << 20;
constexpr uint64_t kGiB = 1ULL << 30;

// Page-table entry bits.
constexpr uint64_t kPresent = 1, kWritable = 2, kUser = 4, kHuge = 0x80;

// Control-register bits of 64-bit paging with CPL3 code.
constexpr uint64_t kCr0 = 0x80050033;  // PE MP ET NE WP AM PG
constexpr uint64_t kCr4Pae = 1 << 5;
constexpr uint64_t kEferLmeLma = 0x500;
constexpr uint64_t kRflagsIopl3 = 0x3002;

size_t Offset(const char* routine) {
  return static_cast<size_t>(routine - pagewise_guest_code_start);
}

sys::VcpuSegment UserSegment(bool code) {
  sys::VcpuSegment s;
  s.limit = 0xffffffff;
  s.selector = code ? 0x1b : 0x23;  // GDT index 3 / 4, RPL 3
  s.type = code ? 0xb : 0x3;        // execute/read accessed : read/write accessed
  s.present = 1;
  s.dpl = 3;
  s.s = 1;
  s.l = code ? 1 : 0;
  s.db = code ? 0 : 1;
  s.g = 1;
  return s;
}

}  // namespace

Result<std::unique_ptr<Guest>> Guest::Create(const GuestOptions& options) {
  std::unique_ptr<Guest> g(new Guest());
  PW_RETURN_IF_ERROR(g->Setup(options));
  return g;
}

Guest::~Guest() {
  vcpu_ = sys::KvmVcpu();
  vm_ = sys::KvmVm();
  if (system_ != nullptr) {
    Env::Default()->Munmap(system_, system_len_).IgnoreError();  // our own scratch mapping
  }
}

Status Guest::Setup(const GuestOptions& options) {
  PW_ASSIGN_OR_RETURN(kvm_, sys::Kvm::Open());
  PW_ASSIGN_OR_RETURN(vm_, kvm_.CreateVm());
  if (options.manual_dirty_protect) PW_RETURN_IF_ERROR(vm_.EnableManualDirtyProtect());
  PW_ASSIGN_OR_RETURN(void* sys_mem,
                      Env::Default()->Mmap(nullptr, kSystemLen, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  system_ = static_cast<char*>(sys_mem);
  system_len_ = kSystemLen;
  // Identity map [0, kGuestPhysLimit) with 2 MiB user pages.
  auto* pml4 = reinterpret_cast<uint64_t*>(system_ + kPml4);
  auto* pdpt = reinterpret_cast<uint64_t*>(system_ + kPdpt);
  pml4[0] = kPdpt | kPresent | kWritable | kUser;
  for (uint64_t g = 0; g < kGuestPhysLimit / kGiB; ++g) {
    const uint64_t pd_phys = kPds + g * 0x1000;
    auto* pd = reinterpret_cast<uint64_t*>(system_ + pd_phys);
    pdpt[g] = pd_phys | kPresent | kWritable | kUser;
    for (uint64_t i = 0; i < 512; ++i) {
      pd[i] = (g * kGiB + (i << 21)) | kPresent | kWritable | kUser | kHuge;
    }
  }
  std::memcpy(system_ + kCode, pagewise_guest_code_start,
              static_cast<size_t>(pagewise_guest_code_end - pagewise_guest_code_start));
  PW_RETURN_IF_ERROR(
      vm_.SetMemorySlot(0, 0, kSystemLen, reinterpret_cast<uint64_t>(system_), false));
  PW_ASSIGN_OR_RETURN(vcpu_, vm_.CreateVcpu(0));
  sys::VcpuSpecialRegs sregs;
  sregs.cs = UserSegment(true);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = UserSegment(false);
  sregs.cr0 = kCr0;
  sregs.cr3 = kPml4;
  sregs.cr4 = kCr4Pae;
  sregs.efer = kEferLmeLma;
  return vcpu_.SetSpecialRegs(sregs).WithContext("guest: entering 64-bit CPL3");
}

Result<GuestSlot> Guest::AddMemory(uint64_t host_addr, uint64_t size, bool log_dirty) {
  const uint64_t page = PageSize();
  if (host_addr % page != 0 || size % page != 0 || size == 0) {
    return Status::InvalidArgument("guest memory must be page aligned and non-empty");
  }
  // Congruent to the host address modulo 1 GiB, so that KVM can map host
  // huge pages (2 MiB or 1 GiB) as huge guest mappings.
  const uint64_t base = (next_guest_phys_ + kGiB - 1) / kGiB * kGiB;
  GuestSlot s;
  s.slot = static_cast<uint32_t>(slots_.size() + 1);
  s.guest_phys = base + host_addr % kGiB;
  s.host_addr = host_addr;
  s.size = size;
  s.log_dirty = log_dirty;
  if (s.guest_phys + size > kGuestPhysLimit) {
    return Status(Code::kResourceExhausted, 0,
                  "guest: more memory than its page table maps (64 GiB of guest physical space)");
  }
  PW_RETURN_IF_ERROR(vm_.SetMemorySlot(s.slot, s.guest_phys, size, host_addr, log_dirty));
  next_guest_phys_ = s.guest_phys + size;
  slots_.push_back(s);
  return s;
}

Status Guest::SetDirtyLogging(const GuestSlot& slot, bool on) {
  for (GuestSlot& s : slots_) {
    if (s.slot != slot.slot) continue;
    PW_RETURN_IF_ERROR(vm_.SetMemorySlot(s.slot, s.guest_phys, s.size, s.host_addr, on));
    s.log_dirty = on;
    return Status::Ok();
  }
  return Status::NotFound("guest: no memory slot " + std::to_string(slot.slot));
}

Result<sys::VcpuRegs> Guest::RunRoutine(const char* name, size_t entry, sys::VcpuRegs in) {
  in.rip = kCode + entry;
  in.rsp = kStackTop;
  in.rflags = kRflagsIopl3;
  PW_RETURN_IF_ERROR(vcpu_.SetRegs(in));
  for (;;) {
    sys::VcpuExit exit;
    Status s = vcpu_.Run(&exit);
    // A signal interrupted KVM_RUN: the guest state is intact, resume it.
    if (s.code() == Code::kRetry) continue;
    if (!s.ok()) return s.WithContext(std::string("guest routine ") + name);
    if (exit.reason == sys::VcpuExit::Reason::kIo && exit.io_port == kExitPort && exit.io_out) {
      sys::VcpuRegs out;
      PW_RETURN_IF_ERROR(vcpu_.GetRegs(&out));
      return out;
    }
    sys::VcpuRegs at;
    std::string rip = "?";
    if (vcpu_.GetRegs(&at).ok()) {
      char buf[32];
      snprintf(buf, sizeof(buf), "0x%" PRIx64, at.rip);
      rip = buf;
    }
    return Status::Internal(std::string("guest routine ") + name + " stopped at rip " + rip + ": " +
                            exit.Describe());
  }
}

Result<int64_t> Guest::Compare(uint64_t guest_a, uint64_t guest_b, uint64_t len,
                               uint64_t* guest_value) {
  if (len % 8 != 0) return Status::InvalidArgument("guest Compare: len must be a multiple of 8");
  sys::VcpuRegs in;
  in.rdi = guest_a;
  in.rsi = guest_b;
  in.rdx = len;
  PW_ASSIGN_OR_RETURN(sys::VcpuRegs out, RunRoutine("compare", Offset(pagewise_guest_compare), in));
  if (guest_value != nullptr) *guest_value = out.rbx;
  return static_cast<int64_t>(out.rax);
}

Result<uint64_t> Guest::Sum(uint64_t guest_a, uint64_t len) {
  sys::VcpuRegs in;
  in.rdi = guest_a;
  in.rsi = len;
  PW_ASSIGN_OR_RETURN(sys::VcpuRegs out, RunRoutine("sum", Offset(pagewise_guest_sum), in));
  return out.rax;
}

Status Guest::WriteList(const std::vector<uint64_t>& guest_addrs, uint64_t value) {
  const size_t capacity = (system_len_ - kTable) / 8;
  for (size_t at = 0; at < guest_addrs.size(); at += capacity) {
    const size_t n = std::min(capacity, guest_addrs.size() - at);
    std::memcpy(system_ + kTable, guest_addrs.data() + at, n * 8);
    sys::VcpuRegs in;
    in.rdi = kTable;
    in.rsi = n;
    in.rdx = value;
    PW_ASSIGN_OR_RETURN(sys::VcpuRegs out,
                        RunRoutine("write_list", Offset(pagewise_guest_write_list), in));
    if (out.rax != n) return Status::Internal("guest write_list stopped early");
  }
  return Status::Ok();
}

Status Guest::WritePairs(const std::vector<Store>& stores) {
  static_assert(sizeof(Store) == 16, "the guest reads {address, value} pairs");
  const size_t capacity = (system_len_ - kTable) / sizeof(Store);
  for (size_t at = 0; at < stores.size(); at += capacity) {
    const size_t n = std::min(capacity, stores.size() - at);
    std::memcpy(system_ + kTable, stores.data() + at, n * sizeof(Store));
    sys::VcpuRegs in;
    in.rdi = kTable;
    in.rsi = n;
    PW_ASSIGN_OR_RETURN(sys::VcpuRegs out,
                        RunRoutine("write_pairs", Offset(pagewise_guest_write_pairs), in));
    if (out.rax != n) return Status::Internal("guest write_pairs stopped early");
  }
  return Status::Ok();
}

Status Guest::Touch(uint64_t guest_a, uint64_t len, uint64_t stride, bool write, uint64_t value) {
  if (stride == 0) return Status::InvalidArgument("guest Touch: stride must be > 0");
  sys::VcpuRegs in;
  in.rdi = guest_a;
  in.rsi = len;
  in.rdx = stride;
  in.rcx = write ? 1 : 0;
  in.r8 = value;
  return RunRoutine("touch", Offset(pagewise_guest_touch), in).status();
}

}  // namespace pagewise::kvm
