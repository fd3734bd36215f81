// CopyUserMemory: copies bytes out of memory the application writes
// concurrently, where the ordering is enforced by the kernel (userfaultfd
// write protection), not by anything a race detector can see.
//
// A live snapshot reads a page while it is write-protected; the writer's
// store happens after the page is unprotected, which ThreadSanitizer cannot
// observe and would report as a race. Under TSan the copy is therefore done
// by an uninstrumented instruction sequence (x86-64 `rep movsb`); elsewhere
// it is memcpy.
//
// Thread safety: stateless.
#ifndef PAGEWISE_LIVE_COPY_USER_H_
#define PAGEWISE_LIVE_COPY_USER_H_

#include <cstddef>
#include <cstring>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PAGEWISE_LIVE_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define PAGEWISE_LIVE_TSAN 1
#endif

namespace pagewise::live {

// Copies len bytes from src (application memory) to dst (our buffer).
// Preconditions: the ranges do not overlap; src is readable.
inline void CopyUserMemory(void* dst, const void* src, size_t len) {
#if defined(PAGEWISE_LIVE_TSAN) && defined(__x86_64__)
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(len) : : "memory");
#else
  std::memcpy(dst, src, len);
#endif
}

}  // namespace pagewise::live

#endif  // PAGEWISE_LIVE_COPY_USER_H_
