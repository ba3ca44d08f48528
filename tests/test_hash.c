/* src/hash.h: csr_strhash. Every byte counts (a change anywhere, a longer string), continuing a
 * hash differs from starting one, and ids that differ only near their end spread over the low bits
 * that the tables pick buckets by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hash.h"

static void test_every_byte_counts(void **state) {
  (void)state;
  char a[100], b[102];
  for (size_t len = 1; len < sizeof(a); len++) {
    memset(a, 'x', len);
    a[len] = '\0';
    uint64_t base = csr_strhash(CSR_FNV1A_BASIS, a);
    for (size_t i = 0; i < len; i++) {
      memcpy(b, a, len + 1);
      b[i] = 'y';
      assert_true(csr_strhash(CSR_FNV1A_BASIS, b) != base);
    }
    memcpy(b, a, len + 1);
    b[len] = 'x';
    b[len + 1] = '\0';
    assert_true(csr_strhash(CSR_FNV1A_BASIS, b) != base); /* one byte longer */
    assert_true(csr_strhash(base, a) != base);            /* continued */
  }
  assert_true(csr_strhash(CSR_FNV1A_BASIS, "") != csr_strhash(CSR_FNV1A_BASIS + 1, ""));
}

static void test_low_bits_spread(void **state) {
  (void)state;
  enum { KEYS = 100000, BUCKETS = 1 << 16 };
  uint8_t *hit = calloc(BUCKETS, 1);
  assert_non_null(hit);
  char id[128];
  size_t used = 0;
  for (int i = 0; i < KEYS; i++) {
    snprintf(id, sizeof(id),
             "csu3|usrt|Checkout|HOUSTON-HOUSTON-17-1795419599%03d|2026-11-23T07:40:%02d.%03dZ",
             i % 1000, (i / 1000) % 60, i % 997);
    size_t b = csr_strhash(CSR_FNV1A_BASIS, id) & (BUCKETS - 1);
    used += hit[b] == 0;
    hit[b] = 1;
  }
  free(hit);
  /* a uniform hash fills 1 - e^(-100000/65536) = 78 % of the buckets */
  print_message("%zu of %d buckets used\n", used, BUCKETS);
  assert_true(used > BUCKETS * 3 / 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_byte_counts),
      cmocka_unit_test(test_low_bits_spread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
