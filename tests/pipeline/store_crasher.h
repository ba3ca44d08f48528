/* What test_store and its kill -9 child (store_crasher.c) agree on: record types and contents. */
#ifndef CSURELAY_TEST_STORE_CRASHER_H
#define CSURELAY_TEST_STORE_CRASHER_H

#include <stdint.h>
#include <string.h>

enum { CRASHER_RECORD = 1, CRASHER_SNAPSHOT = 2 };
#define CRASHER_MAX_FILL (2u << 20)

/* Writes record `seq` (u64 seq, then filler derived from it) into buf; returns its length. Most are
 * small; one in 64 is about 2 MiB, a write long enough for a kill to land inside it. */
static inline size_t crasher_fill(uint8_t *buf, uint64_t seq) {
  size_t fill = (size_t)((seq * 2654435761u) % 24000);
  if (seq % 64 == 7)
    fill = CRASHER_MAX_FILL - 1 - (size_t)(seq % 1000);
  else if (seq % 4)
    fill /= 64;
  memcpy(buf, &seq, 8);
  for (size_t i = 0; i < fill; i++)
    buf[8 + i] = (uint8_t)(seq * 131 + i * 7);
  return 8 + fill;
}

#endif
