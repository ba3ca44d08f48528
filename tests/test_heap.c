/* src/heap.c: the purge on the threadpool (csr_heap_release_async). One runs at a time in the
 * process; it completes from the loop; and under jemalloc it really hands freed pages back (RSS
 * falls by most of what was freed), which the loop thread used to do itself once a second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "heap.h"

#define CHUNK  (16u << 10)
#define CHUNKS 4096u /* 64 MB */

static void test_one_at_a_time(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  uint64_t done = csr_heap_releases_done();
  assert_int_equal(csr_heap_release_async(&loop), 0);
  assert_int_equal(csr_heap_release_async(&loop), UV_EBUSY);
  assert_int_equal(csr_heap_releases_done(), done); /* never before the loop runs its completion */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(csr_heap_releases_done(), done + 1);
  assert_int_equal(csr_heap_release_async(&loop), 0); /* free again once it completed */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(csr_heap_releases_done(), done + 2);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_purge_returns_pages(void **state) {
  (void)state;
  char **blocks = calloc(CHUNKS, sizeof(*blocks));
  assert_non_null(blocks);
  for (unsigned i = 0; i < CHUNKS; i++) {
    blocks[i] = malloc(CHUNK);
    assert_non_null(blocks[i]);
    memset(blocks[i], (int)i, CHUNK); /* touched: resident */
  }
  for (unsigned i = 0; i < CHUNKS; i++)
    free(blocks[i]);
  free(blocks);
  uint64_t freed = csr_resident_bytes();
  assert_true(freed > 0);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(csr_heap_release_async(&loop), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  uint64_t purged = csr_resident_bytes();
  print_message("allocator %s: RSS %llu MB after the frees, %llu MB after the purge\n",
                csr_heap_allocator(), (unsigned long long)(freed >> 20),
                (unsigned long long)(purged >> 20));
  /* jemalloc keeps freed pages until a purge (or its decay, 10 s by default); glibc (the sanitizer
   * builds) gives a freed top of the heap back in free() already, so there is nothing to see. */
  if (strcmp(csr_heap_allocator(), "jemalloc") == 0)
    assert_true(purged + (32u << 20) < freed);
}

/* The calling thread's allocations net of its frees: a 4 MB block shows, its free takes it back
 * (jemalloc; glibc has no such counters and says 0). */
static void test_thread_net(void **state) {
  (void)state;
  uint64_t before = csr_heap_thread_net();
  char *block = malloc(4u << 20);
  assert_non_null(block);
  block[0] = 1;
  uint64_t with = csr_heap_thread_net();
  free(block);
  uint64_t after = csr_heap_thread_net();
  if (strcmp(csr_heap_allocator(), "jemalloc") != 0) {
    assert_true(before == 0 && with == 0 && after == 0);
    return;
  }
  assert_true(with - before >= (4u << 20) && with - before < (5u << 20));
  assert_true(after - before < (64u << 10) || before - after < (64u << 10));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_at_a_time),
      cmocka_unit_test(test_purge_returns_pages),
      cmocka_unit_test(test_thread_net),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
