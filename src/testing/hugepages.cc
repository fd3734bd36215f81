// HugePagePool: add-and-subtract reservations under a shared file lock.
#include "testing/hugepages.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pagewise::testing {
namespace {

constexpr const char* kLockPath = "/tmp/pagewise-hugepages.lock";

std::string PoolDir(size_t page_size) {
  return "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(page_size / 1024) + "kB/";
}

long ReadLong(const std::string& path) {
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) return -1;
  long v = -1;
  if (fscanf(f, "%ld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

bool WriteLong(const std::string& path, long v, std::string* error) {
  FILE* f = fopen(path.c_str(), "we");
  if (f == nullptr) {
    *error = "cannot open " + path + ": " + strerror(errno) + " (reserving huge pages needs root)";
    return false;
  }
  const bool ok = fprintf(f, "%ld\n", v) > 0;
  const bool closed = fclose(f) == 0;
  if (!ok || !closed) {
    *error = "cannot write " + path + ": " + strerror(errno);
    return false;
  }
  return true;
}

// Holds the exclusive lock shared by every test process for its scope.
class PoolLock {
 public:
  PoolLock() {
    fd_ = open(kLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ >= 0) {
      while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~PoolLock() {
    if (fd_ >= 0) close(fd_);  // releases the lock
  }

 private:
  int fd_ = -1;
};

}  // namespace

long HugePagePool::FreePages(size_t page_size) {
  return ReadLong(PoolDir(page_size) + "free_hugepages");
}

long HugePagePool::TotalPages(size_t page_size) {
  return ReadLong(PoolDir(page_size) + "nr_hugepages");
}

HugePagePool::HugePagePool(size_t page_size, size_t count) {
  nr_path_ = PoolDir(page_size) + "nr_hugepages";
  const std::string what =
      std::to_string(count) + " huge pages of " + std::to_string(page_size >> 10) + " KiB";
  {
    PoolLock lock;
    const long before = ReadLong(nr_path_);
    if (before < 0) {
      reason_ = "cannot read " + nr_path_ + ": no hugetlbfs pool of that size on this kernel";
      return;
    }
    std::string error;
    if (!WriteLong(nr_path_, before + static_cast<long>(count), &error)) {
      reason_ = "reserving " + what + ": " + error;
      return;
    }
    const long after = ReadLong(nr_path_);
    added_ = after > before ? static_cast<size_t>(after - before) : 0;
  }
  const long free_pages = FreePages(page_size);
  if (free_pages < static_cast<long>(count)) {
    reason_ = "reserving " + what + ": the kernel added " + std::to_string(added_) + " and " +
              std::to_string(free_pages) +
              " are free (memory too fragmented or too little free memory)";
  }
}

HugePagePool::~HugePagePool() {
  if (added_ == 0) return;
  PoolLock lock;
  const long now = ReadLong(nr_path_);
  if (now < 0) return;
  const long target = now > static_cast<long>(added_) ? now - static_cast<long>(added_) : 0;
  std::string error;
  if (!WriteLong(nr_path_, target, &error)) fprintf(stderr, "HugePagePool: %s\n", error.c_str());
}

}  // namespace pagewise::testing
