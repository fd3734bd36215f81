/* The C API (pagewise/pagewise.h) from a C11 program: every function group,
 * against the real kernel. Built by the tests (cmake/PackagingTests.cmake, as
 * capi_test) and, by tests/install_test.sh, against an installed tree only.
 * Prints one line per check and "N passed, N failed"; exits non-zero on a
 * failure. With PAGEWISE_FORBID_SKIP=1 nothing may be skipped (nothing is:
 * every feature used here exists on the kernels pagewise supports). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pagewise/pagewise.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (cond) {                                                              \
      passed++;                                                              \
    } else {                                                                 \
      failed++;                                                              \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
      fprintf(stderr, __VA_ARGS__);                                          \
      fprintf(stderr, " (pagewise_errmsg: %s)\n", pagewise_errmsg());        \
    }                                                                        \
  } while (0)

static size_t page;

static void* map_pages(size_t n) {
  void* p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  return p;
}

static void fill_pattern(unsigned char* p, size_t len, unsigned seed) {
  for (size_t i = 0; i < len; i++) p[i] = (unsigned char)((i * 31 + seed) ^ (i >> 12));
}

/* ---- server loss turns into SIGBUS ---------------------------------------- */

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig, siginfo_t* info, void* uctx) {
  (void)sig;
  (void)uctx;
  (void)info;
  siglongjmp(bus_jmp, 1);
}

static int lost_calls;
static int lost_error;
static void on_lost(void* ctx, int error, const char* message) {
  (void)message;
  *(int*)ctx += 1;
  lost_error = error;
}

static void test_server_loss(void) {
  enum { kPages = 64 };
  const size_t len = kPages * page;
  unsigned char* src = map_pages(kPages);
  fill_pattern(src, len, 7);
  char sock[128];
  snprintf(sock, sizeof sock, "/tmp/pagewise-pkg-capi-%d.sock", (int)getpid());
  int ready[2];
  if (pipe(ready) != 0) exit(2);
  pid_t child = fork();
  if (child == 0) {
    /* The server: serves only on demand, one page per fault, so that pages
     * stay missing in the client until touched; runs until killed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pagewise_source* s = NULL;
    pagewise_page_server* srv = NULL;
    pagewise_fill_policy policy = {1, 0, 1, 0};
    if (pagewise_source_from_memory(src, len, &s) != 0 ||
        pagewise_page_server_start(sock, s, &policy, &srv) != 0) {
      fprintf(stderr, "server: %s\n", pagewise_errmsg());
      _exit(3);
    }
    pagewise_source_release(s);
    char c = 'S';
    if (write(ready[1], &c, 1) != 1) _exit(4);
    for (;;) pause();
  }
  close(ready[1]);
  char c = 0;
  CHECK(read(ready[0], &c, 1) == 1 && c == 'S', "the server child did not start");
  close(ready[0]);

  unsigned char* guest = map_pages(kPages);
  pagewise_guest_region gr = {(uint64_t)(uintptr_t)guest, len, 0, 0};
  pagewise_lazy_client_options opts = {PAGEWISE_LOSS_SIGBUS, 10000000000LL, on_lost, &lost_calls};
  pagewise_lazy_client* client = NULL;
  int rc = pagewise_lazy_client_connect(sock, &gr, 1, &opts, &client);
  CHECK(rc == 0, "lazy_client_connect: %d", rc);
  if (rc != 0) {
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return;
  }
  CHECK(pagewise_lazy_client_ready(client) == 1, "no ready byte");
  CHECK(pagewise_lazy_client_status(client) == 0, "status while connected");
  CHECK(memcmp(guest, src, page) == 0, "first page differs from the source");
  CHECK(memcmp(guest + 5 * page, src + 5 * page, page) == 0, "page 5 differs");

  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  rc = pagewise_lazy_client_wait_server_lost(client, 10000000000LL);
  CHECK(rc == 0, "wait_server_lost: %d", rc);
  CHECK(pagewise_lazy_client_status(client) == -EPIPE, "status after loss: %d",
        pagewise_lazy_client_status(client));
  CHECK(lost_calls == 1 && lost_error == -EPIPE, "on_server_lost: %d calls, error %d", lost_calls,
        lost_error);

  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old);
  volatile unsigned char got = 0;
  int faulted = 0;
  if (sigsetjmp(bus_jmp, 1) == 0) {
    got = guest[40 * page]; /* never served: must not read as zero */
  } else {
    faulted = 1;
  }
  sigaction(SIGBUS, &old, NULL);
  CHECK(faulted, "an unserved page read %d instead of raising SIGBUS", got);
  CHECK(pagewise_lazy_client_poisoned_pages(client) > 0, "no page poisoned");
  CHECK(guest[0] == src[0], "a served page changed after the loss");
  pagewise_lazy_client_destroy(client);
  munmap(guest, len);
  munmap(src, len);
  unlink(sock);
}

/* ---- the rest, in process ----------------------------------------------------- */

static void test_probe(void) {
  CHECK(strcmp(pagewise_version(), PAGEWISE_VERSION_STRING) == 0, "version %s",
        pagewise_version());
  pagewise_features f;
  CHECK(pagewise_probe(&f) == 0, "probe");
  CHECK(f.kernel_release[0] != 0, "no kernel release");
  CHECK(f.uffd_available, "userfaultfd unavailable");
  const char* reason = NULL;
  int a = pagewise_backend_available(PAGEWISE_BACKEND_UFFD_WP_ASYNC, &reason);
  CHECK(a == 1 || (a == 0 && reason != NULL && reason[0] != 0), "uffd-wp-async: %d", a);
  /* This program does not link libpagewise-interpose. */
  a = pagewise_backend_available(PAGEWISE_BACKEND_MPROTECT, &reason);
  CHECK(a == 0 && strstr(reason, "libpagewise-interpose") != NULL, "mprotect: %d (%s)", a,
        reason ? reason : "");
  CHECK(pagewise_backend_available((pagewise_backend)99, NULL) == -EINVAL, "bad backend");
  CHECK(strcmp(pagewise_backend_name(PAGEWISE_BACKEND_UFFD_WP), "uffd-wp") == 0, "name");
  pagewise_tracker* t = NULL;
  int rc = pagewise_tracker_create(PAGEWISE_BACKEND_MPROTECT, &t);
  CHECK(rc == -EOPNOTSUPP && t == NULL, "mprotect tracker without interposers: %d", rc);
  CHECK(strstr(pagewise_errmsg(), "libpagewise-interpose") != NULL, "message: %s",
        pagewise_errmsg());
}

static void test_tracker(void) {
  unsigned char* mem = map_pages(16);
  pagewise_tracker* t = NULL;
  int rc = pagewise_tracker_create(PAGEWISE_BACKEND_AUTO, &t);
  CHECK(rc == 0 && t != NULL, "tracker_create: %d", rc);
  if (rc != 0) return;
  CHECK(pagewise_tracker_backend(t) != PAGEWISE_BACKEND_MPROTECT, "auto picked mprotect");
  CHECK(pagewise_tracker_track(t, mem, 16 * page) == 0, "track");
  CHECK(pagewise_tracker_track(t, mem, 16 * page) < 0, "tracking twice succeeded");
  mem[3 * page] = 1;
  mem[4 * page + 7] = 2;
  mem[10 * page] = 3;
  const pagewise_range* r = NULL;
  size_t n = 0;
  CHECK(pagewise_tracker_collect(t, &r, &n) == 0, "collect");
  const uint64_t base = (uint64_t)(uintptr_t)mem;
  CHECK(n == 2 && r[0].start == base + 3 * page && r[0].end == base + 5 * page &&
            r[1].start == base + 10 * page && r[1].end == base + 11 * page,
        "collected %zu ranges", n);
  CHECK(pagewise_tracker_collect(t, &r, &n) == 0 && n == 0, "second collect: %zu ranges", n);
  CHECK(pagewise_tracker_untrack(t, mem, 16 * page) == 0, "untrack");
  CHECK(pagewise_tracker_untrack(t, mem, 16 * page) == -ENOENT, "untrack twice");
  pagewise_tracker_destroy(t);
  pagewise_tracker_destroy(NULL);
  munmap(mem, 16 * page);
}

static void test_checkpoint(void) {
  unsigned char* mem = map_pages(32);
  fill_pattern(mem, 32 * page, 1);
  pagewise_region reg;
  CHECK(pagewise_region_of(mem, 32 * page, &reg) == 0, "region_of");
  CHECK(reg.address == (uint64_t)(uintptr_t)mem && reg.length == 32 * page, "region");
  pagewise_checkpoint* cp = NULL;
  int rc = pagewise_checkpoint_create(&reg, 1, PAGEWISE_BACKEND_AUTO, &cp);
  CHECK(rc == 0, "checkpoint_create: %d", rc);
  if (rc != 0) return;
  unsigned char* copy = malloc(32 * page);
  memcpy(copy, mem, 32 * page);
  for (int round = 0; round < 3; round++) {
    memset(mem + 2 * page, 0xAB, 3 * page);
    mem[31 * page + 1] ^= 0xFF;
    pagewise_rewind_stats st;
    CHECK(pagewise_checkpoint_rewind(cp, &st) == 0, "rewind");
    CHECK(st.pages_restored == 4, "round %d: %llu pages restored", round,
          (unsigned long long)st.pages_restored);
    CHECK(memcmp(mem, copy, 32 * page) == 0, "round %d: memory differs after rewind", round);
  }
  mem[0] = 0x5A;
  CHECK(pagewise_checkpoint_update(cp) >= 1, "update");
  mem[0] = 0;
  CHECK(pagewise_checkpoint_rewind(cp, NULL) == 0 && mem[0] == 0x5A, "rewind to the update");
  pagewise_checkpoint_destroy(cp);
  free(copy);
  munmap(mem, 32 * page);
}

static void test_snapshot_image_restore(const char* dir) {
  enum { kPages = 48 };
  unsigned char* mem = map_pages(kPages);
  fill_pattern(mem, kPages * page, 3);
  memset(mem + 8 * page, 0, 4 * page); /* zero pages */
  pagewise_region reg;
  CHECK(pagewise_region_of(mem, kPages * page, &reg) == 0, "region_of");
  reg.name = "heap";
  char base[256], layer[256], live[256];
  snprintf(base, sizeof base, "%s/base.pwimg", dir);
  snprintf(layer, sizeof layer, "%s/layer.pwimg", dir);
  snprintf(live, sizeof live, "%s/live.pwimg", dir);

  pagewise_tracker* t = NULL;
  CHECK(pagewise_tracker_create(PAGEWISE_BACKEND_AUTO, &t) == 0, "tracker");
  CHECK(pagewise_tracker_track(t, mem, kPages * page) == 0, "track");
  pagewise_snapshot_options o = {PAGEWISE_COMPRESSION_ZSTD, 0, 0};
  pagewise_snapshot_stats st;
  int rc = pagewise_snapshot_full(&reg, 1, base, &o, &st);
  CHECK(rc == 0, "snapshot_full: %d", rc);
  CHECK(st.pages == kPages && st.zero_pages == 4, "full: %llu pages, %llu zero",
        (unsigned long long)st.pages, (unsigned long long)st.zero_pages);
  memset(mem + 20 * page, 0x11, page);
  const pagewise_range* w = NULL;
  size_t nw = 0;
  CHECK(pagewise_tracker_collect(t, &w, &nw) == 0 && nw == 1, "collect: %zu", nw);
  rc = pagewise_snapshot_incremental(w, nw, &reg, 1, base, layer, NULL, &st);
  CHECK(rc == 0 && st.pages == 1, "snapshot_incremental: %d, %llu pages", rc,
        (unsigned long long)st.pages);
  pagewise_tracker_destroy(t);

  pagewise_image* img = NULL;
  rc = pagewise_image_open(layer, &img);
  CHECK(rc == 0, "image_open: %d", rc);
  if (rc == 0) {
    CHECK(pagewise_image_layer_count(img) == 2, "layers %zu", pagewise_image_layer_count(img));
    CHECK(pagewise_image_region_count(img) == 1, "regions");
    pagewise_region r;
    CHECK(pagewise_image_region(img, 0, &r) == 0 && r.length == kPages * page &&
              strcmp(r.name, "heap") == 0,
          "region 0");
    CHECK(pagewise_image_region(img, 1, &r) == -EINVAL, "region 1 exists");
    CHECK(pagewise_image_flat_size(img) == kPages * page, "flat size");
    unsigned char* back = malloc(kPages * page);
    CHECK(pagewise_image_read(img, 0, 0, back, kPages * page) == 0, "read");
    CHECK(memcmp(back, mem, kPages * page) == 0, "image differs from memory");
    CHECK(pagewise_image_read_flat(img, 20 * page, back, page) == 0 && back[0] == 0x11, "flat");
    CHECK(pagewise_image_verify(img) == 0, "verify");
    free(back);
    pagewise_image_close(img);
  }
  CHECK(pagewise_image_open("/nonexistent/x.pwimg", &img) == -ENOENT && img == NULL, "missing");

  rc = pagewise_snapshot_live(&reg, 1, live, NULL, &st);
  CHECK(rc == 0 && st.pages == kPages, "snapshot_live: %d", rc);

  /* Lazy restore of the layer's flat view into fresh memory. */
  pagewise_source* src = NULL;
  CHECK(pagewise_source_open_image(layer, &src) == 0, "source_open_image");
  CHECK(pagewise_source_size(src) == kPages * page, "source size");
  pagewise_region want = {0, kPages * page, 0, 0, 0, PAGEWISE_REGION_ANONYMOUS, NULL};
  pagewise_lazy_restore* lr = NULL;
  rc = pagewise_lazy_restore_start(src, &want, 1, NULL, &lr);
  pagewise_source_release(src); /* the restore keeps its own reference */
  CHECK(rc == 0, "lazy_restore_start: %d", rc);
  if (rc == 0) {
    unsigned char* data = pagewise_lazy_restore_data(lr, 0);
    CHECK(data != NULL && memcmp(data, mem, kPages * page) == 0, "restored memory differs");
    CHECK(pagewise_lazy_restore_wait(lr, PAGEWISE_NO_TIMEOUT) == 0, "wait");
    pagewise_restore_stats rs;
    CHECK(pagewise_lazy_restore_stats(lr, &rs) == 0 && rs.pages_total == kPages, "stats");
    pagewise_lazy_restore_destroy(lr);
  }
  pagewise_fill_policy bad = {513, 0, 0, 0};
  CHECK(pagewise_source_from_memory(mem, kPages * page, &src) == 0, "source_from_memory");
  CHECK(pagewise_lazy_restore_start(src, &want, 1, &bad, &lr) == -EINVAL, "window 513");
  CHECK(strstr(pagewise_errmsg(), "fault_window_pages") != NULL, "msg %s", pagewise_errmsg());
  pagewise_source_release(src);
  unlink(base);
  unlink(layer);
  unlink(live);
  munmap(mem, kPages * page);
}

int main(void) {
  page = (size_t)sysconf(_SC_PAGESIZE);
  char dir[] = "/tmp/pagewise-pkg-capi-XXXXXX";
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 2;
  }
  test_server_loss(); /* first: it forks, before any pagewise thread exists */
  test_probe();
  test_tracker();
  test_checkpoint();
  test_snapshot_image_restore(dir);
  rmdir(dir);
  printf("capi: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
