// uapi definitions newer than the system headers (Linux 6.1) that the kernels
// pagewise runs on (6.7+, tested on 6.18) provide.
//
// Each block is guarded so that newer system headers win; the values follow
// include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h and
// Documentation/admin-guide/mm/{userfaultfd,pagemap}.rst. The static_asserts
// at the end pin the layouts; sys/uapi_test.cc checks the numbers against
// the running kernel (which refuses unknown bits and ioctl numbers).
//
// Private to src/sys: nothing outside it should need the raw numbers
// (scripts/lint.sh enforces it; scripts/lint-sys-include-allow.txt lists the
// files still to be moved onto src/sys helpers).
// Thread safety: constants only.
#ifndef PAGEWISE_SYS_UAPI_H_
#define PAGEWISE_SYS_UAPI_H_

#include <linux/fs.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

// ---- userfaultfd: features added after 6.1 ---------------------------------
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1ULL << 13)  // 6.4
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1ULL << 14)  // 6.6
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1ULL << 15)  // 6.7
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1ULL << 16)  // 6.8
#endif

#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)  // 6.4
#endif

// ---- UFFDIO_POISON (6.6) ---------------------------------------------------
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
  struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
  __u64 mode;
  __s64 updated;  // out: bytes poisoned, or -errno
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

// ---- UFFDIO_MOVE (6.8) -----------------------------------------------------
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
  __u64 mode;
  __s64 move;  // out: bytes moved, or -errno
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

// ---- PAGEMAP_SCAN (6.7) ----------------------------------------------------
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
  __u64 start;
  __u64 end;
  __u64 categories;
};

#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct pm_scan_arg {
  __u64 size;
  __u64 flags;
  __u64 start;
  __u64 end;
  __u64 walk_end;
  __u64 vec;
  __u64 vec_len;
  __u64 max_pages;
  __u64 category_inverted;
  __u64 category_mask;
  __u64 category_anyof_mask;
  __u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

// PAGE_IS_GUARD (6.14): guard regions installed by MADV_GUARD_INSTALL.
#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD (1 << 8)
#endif

static_assert(sizeof(struct pm_scan_arg) == 12 * 8, "pm_scan_arg is twelve __u64");
static_assert(sizeof(struct page_region) == 3 * 8, "page_region is three __u64");
static_assert(sizeof(struct uffdio_move) == 5 * 8, "uffdio_move layout");
static_assert(sizeof(struct uffdio_poison) == 4 * 8, "uffdio_poison layout");
static_assert(sizeof(struct uffd_msg) == 32, "uffd_msg is 32 bytes");

#endif  // PAGEWISE_SYS_UAPI_H_
