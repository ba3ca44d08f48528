/* heap.h on jemalloc (CSR_JEMALLOC) or glibc's malloc. */
#include "heap.h"

#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

uint64_t csr_resident_bytes(void) {
  unsigned long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  int n = fscanf(f, "%lu %lu", &size, &resident);
  fclose(f);
  return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

/* One purge at a time for the whole process; only the loop thread that queued it reads these. */
static uv_work_t release_work;
static bool release_running;
static uint64_t releases_done;

static void on_release_work(uv_work_t *req) {
  (void)req;
  csr_heap_release();
}

static void on_release_done(uv_work_t *req, int status) {
  (void)req, (void)status;
  release_running = false;
  releases_done++;
}

int csr_heap_release_async(uv_loop_t *loop) {
  if (release_running)
    return UV_EBUSY;
  int rc = uv_queue_work(loop, &release_work, on_release_work, on_release_done);
  release_running = rc == 0;
  return rc;
}

uint64_t csr_heap_releases_done(void) {
  return releases_done;
}

#ifdef CSR_JEMALLOC
#include <jemalloc/jemalloc.h>

uint64_t csr_heap_in_use(void) {
  /* jemalloc's statistics are a snapshot taken when the epoch advances: one cheap merge of the
   * arenas' counters, unlike mallinfo2's walk of every free chunk. */
  uint64_t epoch = 1;
  size_t allocated = 0, len = sizeof(allocated);
  mallctl("epoch", &epoch, &(size_t){sizeof(epoch)}, &epoch, sizeof(epoch));
  if (mallctl("stats.allocated", &allocated, &len, NULL, 0) != 0)
    return 0;
  return allocated;
}

bool csr_heap_reads_cheaply(void) {
  return true;
}

uint64_t csr_heap_thread_net(void) {
  static __thread uint64_t *allocated, *deallocated;
  if (allocated == NULL) {
    size_t len = sizeof(allocated);
    if (mallctl("thread.allocatedp", &allocated, &len, NULL, 0) != 0 ||
        mallctl("thread.deallocatedp", &deallocated, &len, NULL, 0) != 0) {
      allocated = NULL;
      return 0;
    }
  }
  return *allocated - *deallocated;
}

void csr_heap_release(void) {
  char cmd[64];
  snprintf(cmd, sizeof(cmd), "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
  mallctl(cmd, NULL, NULL, NULL, 0);
}

bool csr_heap_purge_in_background(void) {
  bool on = true;
  return mallctl("background_thread", NULL, NULL, &on, sizeof(on)) == 0;
}

const char *csr_heap_allocator(void) {
  return "jemalloc";
}

#else
#include <malloc.h>

uint64_t csr_heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

bool csr_heap_reads_cheaply(void) {
  return false;
}

uint64_t csr_heap_thread_net(void) {
  return 0;
}

void csr_heap_release(void) {
  malloc_trim(0);
}

bool csr_heap_purge_in_background(void) {
  return false;
}

const char *csr_heap_allocator(void) {
  return "glibc";
}
#endif
