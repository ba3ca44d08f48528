/* String hashes for the in-memory hash tables (state, enrich, poll, cij, ingress). Not for anything
 * stored or compared across processes (the dedupe set's stored hashes are SipHash, state_seen.c).
 * Callers that pick buckets by the low bits may add their own final mix. */
#ifndef CSURELAY_HASH_H
#define CSURELAY_HASH_H

#include <stdint.h>
#include <string.h>

#define CSR_FNV1A_BASIS 1469598103934665603ull

/** One byte of FNV-1a (for a caller that transforms each byte, as jobs.c folds case). */
static inline uint64_t csr_fnv1a_byte(uint64_t h, unsigned char c) {
  return (h ^ c) * 1099511628211ull;
}

/**
 * Continues `h` (CSR_FNV1A_BASIS to start) over the bytes of `s`, eight at a time: a multiply and
 * a shift per word, and murmur3's finaliser. Event ids are ~80 bytes; byte-wise FNV-1a took ~58 ns
 * for one (a chain of dependent multiplies), this ~12, and the state looks an id up several times
 * per event.
 */
static inline uint64_t csr_strhash(uint64_t h, const char *s) {
  size_t n = strlen(s);
  for (; n >= 8; s += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, s, 8);
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  memcpy(&tail, s, n);
  h = (h ^ tail ^ ((uint64_t)n << 56)) * 0x9e3779b97f4a7c15ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

#endif
