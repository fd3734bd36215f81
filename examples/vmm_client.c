/* A Firecracker-style VMM's memory side, against `pagewise serve`: map guest
 * memory, hand it to the page server (Firecracker's UFFD handshake, through
 * pagewise's lazy client), and run: pages arrive as the guest touches them.
 * If the server dies, touching a page not yet served raises SIGBUS instead of
 * reading zeros.
 *
 *   cc vmm_client.c $(pkg-config --cflags --libs pagewise) -o vmm_client
 *   pagewise serve --socket /tmp/mem.sock --mem-file guest.mem &
 *   ./vmm_client /tmp/mem.sock guest.mem
 *
 * Reads every guest page, compares it with the memory file (exit status 1 on
 * a difference) and prints what the server filled on demand. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pagewise/pagewise.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s SOCKET MEMORY_FILE\n", argv[0]);
    return 2;
  }
  const int fd = open(argv[2], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return perror(argv[2]), 2;
  const size_t len = (size_t)st.st_size;
  const unsigned char* want = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  if (want == MAP_FAILED) return perror("mmap memory file"), 2;

  /* Guest memory: private anonymous, as Firecracker maps it. */
  unsigned char* guest =
      mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (guest == MAP_FAILED) return perror("mmap guest"), 2;
  pagewise_guest_region region = {(uint64_t)(uintptr_t)guest, len, 0, 0};
  pagewise_lazy_client_options options = {PAGEWISE_LOSS_SIGBUS, 5000000000LL, NULL, NULL};
  pagewise_lazy_client* client = NULL;
  if (pagewise_lazy_client_connect(argv[1], &region, 1, &options, &client) != 0) {
    fprintf(stderr, "connect %s: %s\n", argv[1], pagewise_errmsg());
    return 2;
  }
  printf("vmm_client: connected, %zu bytes of guest memory, ready byte %s\n", len,
         pagewise_lazy_client_ready(client) ? "seen" : "not seen");

  /* "Run the guest": touch its memory, back to front. */
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t bad = 0;
  for (size_t off = len; off >= page; off -= page) {
    if (memcmp(guest + off - page, want + off - page, page) != 0) bad++;
  }
  if (pagewise_lazy_client_status(client) != 0) {
    fprintf(stderr, "server lost: %s\n", pagewise_errmsg());
  }
  pagewise_lazy_client_destroy(client);
  if (bad != 0) {
    fprintf(stderr, "vmm_client: %zu pages differ from %s\n", bad, argv[2]);
    return 1;
  }
  printf("vmm_client: all %zu pages match %s\n", len / page, argv[2]);
  return 0;
}
