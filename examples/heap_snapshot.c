/* A live snapshot of a heap: save a consistent image of memory while the
 * program's threads keep writing to it, without fork(). Each page is copied
 * before its first write after the snapshot starts; the image holds the heap
 * as it was at that instant.
 *
 *   cc heap_snapshot.c $(pkg-config --cflags --libs pagewise) -pthread -o heap_snapshot
 *   ./heap_snapshot OUT.pwimg
 *
 * A writer thread keeps storing into the heap during the snapshot: each store
 * is one aligned 64-bit word holding (sequence << 24 | its own word index).
 * The image is then opened, verified (every checksum), and every word of it
 * checked to be one the program really had there: its index bits match its
 * place (a misplaced or zero-filled page would not), and its sequence is one
 * the writer reached before the snapshot finished. Words that changed after
 * the snapshot started differ between the image and the heap: the program
 * says how many, to show the writer never stopped. */
#define _GNU_SOURCE
#include <pagewise/pagewise.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { kPages = 4096 }; /* 16 MiB */

static unsigned char* heap;
static size_t page;
static atomic_int stop;
static atomic_long writes;

static void* writer(void* arg) {
  (void)arg;
  uint64_t x = 88172645463325252ULL;
  const size_t words = kPages * page / 8;
  uint64_t* w = (uint64_t*)heap;
  for (uint64_t seq = 1; !atomic_load(&stop); seq++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const size_t i = (size_t)(x % words);
    __atomic_store_n(&w[i], seq << 24 | i, __ATOMIC_RELAXED);
    atomic_store(&writes, (long)seq);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUT.pwimg\n", argv[0]);
    return 2;
  }
  page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t len = kPages * page;
  heap = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (heap == MAP_FAILED) return perror("mmap"), 2;
  const size_t words = len / 8;
  for (size_t i = 0; i < words; i++) ((uint64_t*)heap)[i] = i; /* sequence 0 */
  pthread_t t;
  pthread_create(&t, NULL, writer, NULL);
  while (atomic_load(&writes) < 1000) sched_yield(); /* the writer is running */

  pagewise_region region;
  pagewise_snapshot_stats st;
  int rc = pagewise_region_of(heap, len, &region);
  region.name = "heap";
  if (rc == 0) rc = pagewise_snapshot_live(&region, 1, argv[1], NULL, &st);
  const long after = atomic_load(&writes); /* the writer's sequence when it ended */
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  if (rc != 0) {
    fprintf(stderr, "live snapshot: %s\n", pagewise_errmsg());
    return 2;
  }

  /* Every word of the image is one the program had at that place. */
  pagewise_image* img = NULL;
  if (pagewise_image_open(argv[1], &img) != 0 || pagewise_image_verify(img) != 0) {
    fprintf(stderr, "image: %s\n", pagewise_errmsg());
    return 1;
  }
  uint64_t* buf = malloc(page);
  size_t wrong = 0, changed_since = 0;
  for (size_t p = 0; p < kPages; p++) {
    if (pagewise_image_read(img, 0, p * page, buf, page) != 0) {
      fprintf(stderr, "read: %s\n", pagewise_errmsg());
      return 1;
    }
    for (size_t k = 0; k < page / 8; k++) {
      const size_t i = p * page / 8 + k;
      const uint64_t v = buf[k];
      if ((v & 0xffffff) != (i & 0xffffff) || (v >> 24) > (uint64_t)after + 1) wrong++;
      if (v != ((uint64_t*)heap)[i]) changed_since++;
    }
  }
  pagewise_image_close(img);
  free(buf);
  printf("heap_snapshot: %zu pages saved in %.1f ms while a writer stored %ld words; "
         "%zu words changed since, %zu wrong; image verified\n",
         (size_t)st.pages, (double)st.duration_ns / 1e6, after, changed_since, wrong);
  return wrong == 0 ? 0 : 1;
}
