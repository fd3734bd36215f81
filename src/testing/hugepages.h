// HugePagePool: a test's reservation of hugetlbfs pages, added to the
// kernel's pool for the test's lifetime and given back afterwards.
//
// Other tests (ctest -j2) and other developers' runs may reserve huge pages
// at the same time, so a reservation never SETS the pool: under an
// exclusive flock(2) on a lock file shared by every pagewise test process it
// reads the pool size, writes size + count, and remembers how many pages
// the kernel really added (it may add fewer when memory is fragmented); on
// destruction, under the same lock, it subtracts exactly those. A process
// killed while holding a reservation leaves the pool larger (never smaller)
// than it found it.
//
// Thread safety: one object per test; construction and destruction may run
// concurrently in several threads or processes (the lock serialises them).
#ifndef PAGEWISE_TESTING_HUGEPAGES_H_
#define PAGEWISE_TESTING_HUGEPAGES_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace pagewise::testing {

class HugePagePool {
 public:
  // Adds `count` pages of `page_size` bytes (2 MiB: /proc/sys/vm/
  // nr_hugepages's size; others: /sys/kernel/mm/hugepages/hugepages-<kB>kB/
  // nr_hugepages) to the pool. Never fails: ok() says whether at least
  // `count` pages are free afterwards, reason() why not.
  HugePagePool(size_t page_size, size_t count);
  ~HugePagePool();
  HugePagePool(const HugePagePool&) = delete;
  HugePagePool& operator=(const HugePagePool&) = delete;

  bool ok() const { return reason_.empty(); }
  const std::string& reason() const { return reason_; }
  size_t added() const { return added_; }

  // Pool counters of `page_size` pages (sysfs), or -1 if unreadable.
  static long FreePages(size_t page_size);
  static long TotalPages(size_t page_size);

 private:
  std::string nr_path_;
  size_t added_ = 0;
  std::string reason_;
};

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTING_HUGEPAGES_H_
