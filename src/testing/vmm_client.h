// VmmClient: a Firecracker-style client of `pagewise serve`, written from
// the handshake's description only (tests only): it maps guest memory of
// one kind, creates a userfaultfd (EVENT_REMOVE, plus what the kind needs),
// registers every region, connects to the server's socket and sends ONE
// message: the userfaultfd by SCM_RIGHTS and the JSON array of
// {"base_host_virt_addr", "size", "offset", "page_size"} objects.
//
// Kinds: private anonymous 4 KiB memory (Firecracker's default), private
// anonymous hugetlbfs memory (Firecracker's huge_pages "2M"; the handshake
// then says page_size 2097152) and the client's own memfd mapped
// MAP_SHARED (shmem registered in MISSING mode).
//
// Thread safety: one test thread; the guest memory may be touched from any
// thread (or a KVM guest) while the client is connected.
#ifndef PAGEWISE_TESTING_VMM_CLIENT_H_
#define PAGEWISE_TESTING_VMM_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pagewise::testing {

enum class GuestMemKind { kAnon, kHugetlb, kMemfdShared };

struct VmmRegion {
  uint64_t offset = 0;  // byte offset in the flat memory file
  uint64_t size = 0;    // bytes (a multiple of the page size)
};

struct VmmOptions {
  GuestMemKind kind = GuestMemKind::kAnon;
  uint64_t page_size = 4096;  // hugetlbfs: 2 MiB or 1 GiB
  // The page_size the handshake announces (0: page_size); a test of a
  // wrong announcement sets it.
  uint64_t announced_page_size = 0;
  bool user_mode_only = false;  // UFFD_USER_MODE_ONLY (breaks KVM guests)
  // Names the page size "page_size_kib", as Firecracker releases before the
  // rename did (the value is in bytes all the same).
  bool legacy_page_size_key = false;
};

class VmmClient {
 public:
  VmmClient() = default;
  ~VmmClient() { Close(); }
  VmmClient(const VmmClient&) = delete;
  VmmClient& operator=(const VmmClient&) = delete;

  // Maps, registers, connects and sends. "" on success, else what failed.
  std::string Connect(const std::string& socket, const std::vector<VmmRegion>& regions,
                      const VmmOptions& options = {});
  // Closes the socket and the userfaultfd and unmaps the memory.
  void Close();

  char* mem(size_t r) const { return mem_[r]; }
  uint64_t addr(size_t r) const { return reinterpret_cast<uint64_t>(mem_[r]); }
  const std::vector<VmmRegion>& regions() const { return regions_; }
  int uffd() const { return uffd_; }
  int sock() const { return sock_; }
  // Closes only our userfaultfd copy (the server's copy keeps serving).
  void CloseUffd();

 private:
  std::vector<char*> mem_;
  std::vector<VmmRegion> regions_;
  std::vector<int> memfds_;
  int uffd_ = -1;
  int sock_ = -1;
};

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTING_VMM_CLIENT_H_
