/* The state model's internals: the finished part of the dedupe set (state_seen.c) and the
 * structures state.c applies records to and state_dump.c writes out; for those files and their
 * tests. */
#ifndef CSURELAY_PIPELINE_STATE_INTERNAL_H
#define CSURELAY_PIPELINE_STATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csurelay/error.h"
#include "csurelay/pipeline.h"

/*
 * A finished id is remembered by a 128-bit hash of its text, SipHash-2-4 with a 128-bit output
 * under a fixed key (the key is part of the AOF format: dumps write these hashes). Two ids with the
 * same hash are one id to the dedupe set, so a new id whose hash equals a remembered one's would be
 * refused as a duplicate: a lost event. With n ids remembered that chance is about n / 2^128 per
 * new id (3e-32 at n = 10^7, 1e-20 over a year at 10,000 events/s). 64 bits would not do: n / 2^64
 * is 5e-13 per id at n = 10^7, a lost event every few years at that rate.
 *
 * Layout, about 53-61 bytes per id (4-8 bytes of slack in the heaps, 11-21 in the table):
 *  - records: {h1, h2, time_ms, lane}, 32 bytes, in chunks of 4096 that are never moved nor freed
 *    before the set is (a record freed by expiry goes on a free list and is reused first);
 *  - the table: open addressing with linear probing and backward-shift deletion (no tombstones),
 *    8-byte slots {tag, ref}: tag is h1's top 32 bits and picks the home slot (its top `bits`
 *    bits), ref is the record's index + 1 (0: empty). A probe touches a record only when a tag
 *    matches. Grows at 3/4 load, shrinks below 1/8 (on expiry);
 *  - per (csu, type) lane, a binary min-heap of record indices on time_ms, for expiry.
 */

#define PL__SEEN_CHUNK_BITS 12u
#define PL__SEEN_FREE       UINT32_MAX /* a record's lane while it is on the free list */

struct pl__seen_rec {
  uint64_t h1, h2; /* the id's hash */
  int64_t time_ms; /* the event's time: it expires by it */
  uint32_t lane;   /* the state's index of its (csu, type) lane, or PL__SEEN_FREE */
  uint32_t next;   /* on the free list: the next free record's index (UINT32_MAX: none) */
};

struct pl__seen_slot {
  uint32_t tag;
  uint32_t ref;
};

/** A lane's expiry heap: record indices, the smallest time_ms first. */
struct pl__seen_heap {
  uint32_t *v;
  size_t n, cap;
};

struct pl__seen {
  struct pl__seen_slot *slots;
  size_t cap; /* 0 or a power of two, >= 64 */
  unsigned bits;
  size_t n; /* ids held */
  struct pl__seen_rec **chunks;
  size_t n_chunks, cap_chunks;
  uint32_t used;      /* records handed out from the chunks (those on the free list included) */
  uint32_t free_head; /* UINT32_MAX: no free record */
};

/** Initialises an empty set (no allocation). */
void pl__seen_init(struct pl__seen *t);
void pl__seen_free(struct pl__seen *t);
void pl__seen_heap_free(struct pl__seen_heap *hp);

/** The 128-bit hash of an id: SipHash-2-4-128 under the set's key, h[0] and h[1] as the reference
 *  implementation's output bytes 0-7 and 8-15 read little-endian. */
void pl__seen_hash(const char *id, size_t len, uint64_t h[2]);
/** SipHash-2-4-128 of `len` bytes under `key` (tests check it against the reference vectors). */
void pl__siphash128(const uint8_t key[16], const void *data, size_t len, uint64_t h[2]);

/** Makes room for one pl__seen_add to `hp` (a record, a table slot, a heap slot); 0 or UV_ENOMEM.
 *  What it allocates stays; it changes nothing the set holds. */
CSR_NODISCARD int pl__seen_reserve(struct pl__seen *t, struct pl__seen_heap *hp);
/** Adds the hash to the set and to `hp` after a successful reserve; never fails. False (and
 *  nothing added) when the hash is already held. */
bool pl__seen_add(struct pl__seen *t, struct pl__seen_heap *hp, uint32_t lane, const uint64_t h[2],
                  int64_t time_ms);
/** The record of the hash, or NULL; valid until the next add, expire or free. */
const struct pl__seen_rec *pl__seen_find(const struct pl__seen *t, const uint64_t h[2]);
/** Drops every id of `hp` whose time is below `below`; returns how many. */
size_t pl__seen_expire(struct pl__seen *t, struct pl__seen_heap *hp, int64_t below);
/** After expiry: gives back table memory when the load fell below 1/8 (a failure keeps it). */
void pl__seen_shrink(struct pl__seen *t);
/** The i-th record of `hp` (i < hp->n), in heap order (for dumps). */
const struct pl__seen_rec *pl__seen_heap_at(const struct pl__seen *t,
                                            const struct pl__seen_heap *hp, size_t i);
/** Bytes held by the table and the records' chunks; and by one heap. */
size_t pl__seen_bytes(const struct pl__seen *t);
size_t pl__seen_heap_bytes(const struct pl__seen_heap *hp);

/**
 * Checks every invariant (tests): each slot reachable from its home without crossing an empty
 * slot, refs distinct and pointing at used records, n right, the free list and the heaps (`heaps`,
 * `n_heaps`: every lane's) covering the records exactly once with the heap order. NULL when the
 * set is sound, else what is wrong.
 */
const char *pl__seen_check(const struct pl__seen *t, const struct pl__seen_heap *const *heaps,
                           size_t n_heaps);

/* ---------------------------------------------------------------------------------------------- */
/* The state's own structures (state.c applies records to them, state_dump.c writes them out)     */
/* ---------------------------------------------------------------------------------------------- */

/* A string-keyed hash table (state.c): open addressing, linear probing, backward-shift deletion. */
struct slot {
  uint64_t h;
  const char *key; /* NULL: empty; the value owns the key's memory */
  void *val;
};

struct tab {
  struct slot *s;
  size_t cap; /* a power of two, or 0 */
  size_t n;
};

/* One (csu, type): its cursor and the expiry heap of its finished ids. */
struct lane {
  const char *csu, *type; /* interned */
  uint32_t index;         /* in lanes[]: finished ids name their lane by it */
  int64_t horizon_ms;
  bool has_cursor;
  int64_t cursor_ms;
  struct pl__seen_heap seen;
};

/* The view pl_state_event gives of a finished id, rebuilt on each call. */
struct finished_view {
  struct pl_state_event ev;
  char *id;
  size_t cap;
};

struct pl_state {
  struct tab ids;       /* id -> struct pl_state_event, live events only */
  struct pl__seen seen; /* the finished ids */
  struct tab names;     /* CSU, type and sink names -> the interned copy */
  struct finished_view *view;
  struct lane **lanes;
  size_t n_lanes, cap_lanes;
  struct pl_state_horizon *horizons; /* names owned */
  size_t n_horizons;
  int64_t default_horizon_ms;
  struct pl_state_event *live_head, *live_tail;
  struct pl_state_delivery *dlq_head, *dlq_tail;
  struct pl_state_stats st;
  struct csr_jw jw;     /* scratch: rows at ADMIT, records in dumps */
  struct cs_jobs *jobs; /* the ingress's records (JOB, JOB_END, CUSTOMER) */
  char err[256];
};

#endif
