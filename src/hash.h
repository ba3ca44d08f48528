/* FNV-1a over a NUL-terminated string, for the in-memory hash tables (state, enrich, poll, cij,
 * ingress). Not for anything stored or compared across processes (the dedupe set's stored hashes
 * are SipHash, state_seen.c). Callers that pick buckets by the low bits add their own final mix. */
#ifndef CSURELAY_HASH_H
#define CSURELAY_HASH_H

#include <stdint.h>

#define CSR_FNV1A_BASIS 1469598103934665603ull

static inline uint64_t csr_fnv1a_byte(uint64_t h, unsigned char c) {
  return (h ^ c) * 1099511628211ull;
}

/** Continues `h` (CSR_FNV1A_BASIS to start) over the bytes of `s`. */
static inline uint64_t csr_fnv1a(uint64_t h, const char *s) {
  for (; *s; s++)
    h = csr_fnv1a_byte(h, (unsigned char)*s);
  return h;
}

#endif
