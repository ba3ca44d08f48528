/* The finished ids of the state model's dedupe set (state_internal.h): 128-bit hashes in an
 * open-addressing table whose slots point into fixed chunks of records, and per lane a min-heap of
 * records on time for expiry. A finished id costs one 32-byte record, one 8-byte slot at 3/8 to 3/4
 * load and one 4-byte heap entry, against about 240 bytes when it kept its whole entry. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "state_internal.h"

#define CHUNK ((size_t)1 << PL__SEEN_CHUNK_BITS)
#define NONE  UINT32_MAX
/* Record indices stay below (UINT32_MAX >> CHUNK_BITS) chunks, so index + 1 (a slot's ref) fits
 * in 32 bits and no index is NONE. */
#define MAX_CHUNKS ((size_t)(UINT32_MAX >> PL__SEEN_CHUNK_BITS))
#define MIN_CAP    64u

/* ---------------------------------------------------------------------------------------------- */
/* SipHash-2-4 with a 128-bit output (Aumasson and Bernstein; the reference's outlen = 16 variant)
 */
/* ---------------------------------------------------------------------------------------------- */

/* Part of the AOF format: the `h` of SEEN records is this hash. Never change it. */
static const uint8_t seen_key[16] = {'c', 's', 'u', 'r', 'e', 'l', 'a', 'y',
                                     '.', 'd', 'e', 'd', 'u', 'p', 'e', '1'};

static uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

static uint64_t load64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static void sipround(uint64_t v[4]) {
  v[0] += v[1];
  v[1] = rotl(v[1], 13) ^ v[0];
  v[0] = rotl(v[0], 32);
  v[2] += v[3];
  v[3] = rotl(v[3], 16) ^ v[2];
  v[0] += v[3];
  v[3] = rotl(v[3], 21) ^ v[0];
  v[2] += v[1];
  v[1] = rotl(v[1], 17) ^ v[2];
  v[2] = rotl(v[2], 32);
}

static void siprounds(uint64_t v[4], int n) {
  while (n-- > 0)
    sipround(v);
}

void pl__siphash128(const uint8_t key[16], const void *data, size_t len, uint64_t h[2]) {
  const uint8_t *p = data;
  uint64_t k0 = load64(key), k1 = load64(key + 8);
  uint64_t v[4] = {0x736f6d6570736575ull ^ k0, 0x646f72616e646f6dull ^ k1 ^ 0xee,
                   0x6c7967656e657261ull ^ k0, 0x7465646279746573ull ^ k1};
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t m = load64(p + i);
    v[3] ^= m;
    siprounds(v, 2);
    v[0] ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t j = 0; i + j < len; j++)
    b |= (uint64_t)p[i + j] << (8 * j);
  v[3] ^= b;
  siprounds(v, 2);
  v[0] ^= b;
  v[2] ^= 0xee;
  siprounds(v, 4);
  h[0] = v[0] ^ v[1] ^ v[2] ^ v[3];
  v[1] ^= 0xdd;
  siprounds(v, 4);
  h[1] = v[0] ^ v[1] ^ v[2] ^ v[3];
}

void pl__seen_hash(const char *id, size_t len, uint64_t h[2]) {
  pl__siphash128(seen_key, id, len, h);
}

/* ---------------------------------------------------------------------------------------------- */
/* Records, slots and heaps                                                                       */
/* ---------------------------------------------------------------------------------------------- */

void pl__seen_init(struct pl__seen *t) {
  memset(t, 0, sizeof(*t));
  t->free_head = NONE;
}

void pl__seen_free(struct pl__seen *t) {
  for (size_t i = 0; i < t->n_chunks; i++)
    free(t->chunks[i]);
  free(t->chunks);
  free(t->slots);
  pl__seen_init(t);
}

void pl__seen_heap_free(struct pl__seen_heap *hp) {
  free(hp->v);
  memset(hp, 0, sizeof(*hp));
}

static struct pl__seen_rec *rec(const struct pl__seen *t, uint32_t i) {
  return &t->chunks[i >> PL__SEEN_CHUNK_BITS][i & (CHUNK - 1)];
}

static uint32_t tag_of(uint64_t h1) {
  return (uint32_t)(h1 >> 32);
}

/* The home slot: the tag's top bits (the hash is uniform, so any of its bits would do). */
static size_t home(uint32_t tag, unsigned bits) {
  return (size_t)(tag >> (32 - bits));
}

/* The slot holding h, or the empty slot that ends its probe sequence (the table is never full). */
static size_t probe(const struct pl__seen *t, const uint64_t h[2]) {
  uint32_t tag = tag_of(h[0]);
  size_t mask = t->cap - 1;
  for (size_t i = home(tag, t->bits);; i = (i + 1) & mask) {
    const struct pl__seen_slot *s = &t->slots[i];
    if (s->ref == 0)
      return i;
    if (s->tag == tag) {
      const struct pl__seen_rec *r = rec(t, s->ref - 1);
      if (r->h1 == h[0] && r->h2 == h[1])
        return i;
    }
  }
}

static int rehash(struct pl__seen *t, size_t cap) {
  struct pl__seen_slot *s = calloc(cap, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  unsigned bits = 0;
  while (((size_t)1 << bits) < cap)
    bits++;
  for (size_t i = 0; i < t->cap; i++) {
    if (t->slots[i].ref == 0)
      continue;
    size_t j = home(t->slots[i].tag, bits);
    while (s[j].ref != 0)
      j = (j + 1) & (cap - 1);
    s[j] = t->slots[i];
  }
  free(t->slots);
  t->slots = s;
  t->cap = cap;
  t->bits = bits;
  return 0;
}

static int64_t when(const struct pl__seen *t, uint32_t i) {
  return rec(t, i)->time_ms;
}

static void heap_push(const struct pl__seen *t, struct pl__seen_heap *hp, uint32_t idx) {
  int64_t tm = when(t, idx);
  size_t i = hp->n++;
  while (i > 0 && when(t, hp->v[(i - 1) / 2]) > tm) {
    hp->v[i] = hp->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  hp->v[i] = idx;
}

static uint32_t heap_pop(const struct pl__seen *t, struct pl__seen_heap *hp) {
  uint32_t top = hp->v[0], last = hp->v[--hp->n];
  int64_t tm = when(t, last);
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= hp->n)
      break;
    if (c + 1 < hp->n && when(t, hp->v[c + 1]) < when(t, hp->v[c]))
      c++;
    if (when(t, hp->v[c]) >= tm)
      break;
    hp->v[i] = hp->v[c];
    i = c;
  }
  if (hp->n > 0)
    hp->v[i] = last;
  return top;
}

int pl__seen_reserve(struct pl__seen *t, struct pl__seen_heap *hp) {
  if (t->free_head == NONE && t->used == t->n_chunks * CHUNK) {
    if (t->n_chunks >= MAX_CHUNKS)
      return UV_ENOMEM;
    if (t->n_chunks == t->cap_chunks) {
      size_t cap = t->cap_chunks ? t->cap_chunks * 2 : 16;
      struct pl__seen_rec **v = realloc(t->chunks, cap * sizeof(*v));
      if (v == NULL)
        return UV_ENOMEM;
      t->chunks = v;
      t->cap_chunks = cap;
    }
    if ((t->chunks[t->n_chunks] = malloc(CHUNK * sizeof(struct pl__seen_rec))) == NULL)
      return UV_ENOMEM;
    t->n_chunks++;
  }
  if ((t->n + 1) * 4 > t->cap * 3) {
    if (t->bits >= 32 || rehash(t, t->cap ? t->cap * 2 : MIN_CAP) != 0)
      return UV_ENOMEM;
  }
  if (hp->n == hp->cap) {
    size_t cap = hp->cap ? hp->cap * 2 : MIN_CAP;
    uint32_t *v = realloc(hp->v, cap * sizeof(*v));
    if (v == NULL)
      return UV_ENOMEM;
    hp->v = v;
    hp->cap = cap;
  }
  return 0;
}

bool pl__seen_add(struct pl__seen *t, struct pl__seen_heap *hp, uint32_t lane, const uint64_t h[2],
                  int64_t time_ms) {
  size_t i = probe(t, h);
  if (t->slots[i].ref != 0)
    return false;
  uint32_t idx = t->free_head;
  if (idx != NONE)
    t->free_head = rec(t, idx)->next;
  else
    idx = t->used++;
  *rec(t, idx) = (struct pl__seen_rec){h[0], h[1], time_ms, lane, NONE};
  t->slots[i] = (struct pl__seen_slot){tag_of(h[0]), idx + 1};
  t->n++;
  heap_push(t, hp, idx);
  return true;
}

const struct pl__seen_rec *pl__seen_find(const struct pl__seen *t, const uint64_t h[2]) {
  if (t->n == 0)
    return NULL;
  size_t i = probe(t, h);
  return t->slots[i].ref ? rec(t, t->slots[i].ref - 1) : NULL;
}

/* Empties the slot of record idx, then walks the cluster after it moving back every slot whose
 * home does not lie cyclically in (hole, slot]: such a slot was placed past the hole because the
 * hole was taken, and would be unreachable behind an empty slot. No tombstones, so lookups never
 * slow down with deletions. */
static void slot_del(struct pl__seen *t, uint32_t idx) {
  size_t mask = t->cap - 1, i = home(tag_of(rec(t, idx)->h1), t->bits), j;
  while (t->slots[i].ref != idx + 1) {
    if (t->slots[i].ref == 0)
      return; /* not held: cannot happen (pl__seen_check) */
    i = (i + 1) & mask;
  }
  for (j = i;;) {
    j = (j + 1) & mask;
    if (t->slots[j].ref == 0)
      break;
    size_t k = home(t->slots[j].tag, t->bits);
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
      continue;
    t->slots[i] = t->slots[j];
    i = j;
  }
  t->slots[i] = (struct pl__seen_slot){0, 0};
  t->n--;
}

size_t pl__seen_expire(struct pl__seen *t, struct pl__seen_heap *hp, int64_t below) {
  size_t dropped = 0;
  while (hp->n > 0 && when(t, hp->v[0]) < below) {
    uint32_t idx = heap_pop(t, hp);
    slot_del(t, idx);
    struct pl__seen_rec *r = rec(t, idx);
    r->lane = PL__SEEN_FREE;
    r->next = t->free_head;
    t->free_head = idx;
    dropped++;
  }
  size_t cap = hp->cap;
  while (cap > MIN_CAP && hp->n < cap / 4)
    cap /= 2;
  if (cap < hp->cap) {
    uint32_t *v = realloc(hp->v, cap * sizeof(*v));
    if (v != NULL) { /* else keep the larger array */
      hp->v = v;
      hp->cap = cap;
    }
  }
  return dropped;
}

void pl__seen_shrink(struct pl__seen *t) {
  size_t cap = t->cap;
  while (cap > MIN_CAP && t->n * 8 < cap)
    cap /= 2;
  if (cap < t->cap)
    (void)rehash(t, cap); /* out of memory: keep the larger table */
}

const struct pl__seen_rec *pl__seen_heap_at(const struct pl__seen *t,
                                            const struct pl__seen_heap *hp, size_t i) {
  return rec(t, hp->v[i]);
}

size_t pl__seen_bytes(const struct pl__seen *t) {
  return t->cap * sizeof(*t->slots) + t->n_chunks * CHUNK * sizeof(struct pl__seen_rec) +
         t->cap_chunks * sizeof(*t->chunks);
}

size_t pl__seen_heap_bytes(const struct pl__seen_heap *hp) {
  return hp->cap * sizeof(*hp->v);
}

/* ---------------------------------------------------------------------------------------------- */
/* Invariants (tests)                                                                             */
/* ---------------------------------------------------------------------------------------------- */

enum { IN_SLOT = 1, IN_HEAP = 2, IN_FREE = 4 };

static const char *check_slots(const struct pl__seen *t, uint8_t *mark) {
  size_t n = 0;
  if (t->cap != 0 && (t->cap < MIN_CAP || ((size_t)1 << t->bits) != t->cap))
    return "the capacity is not 2^bits (at least 64)";
  if (t->n * 4 > t->cap * 3)
    return "the table is over 3/4 full";
  for (size_t i = 0; i < t->cap; i++) {
    const struct pl__seen_slot *s = &t->slots[i];
    if (s->ref == 0)
      continue;
    n++;
    if (s->ref - 1 >= t->used)
      return "a slot refers past the records handed out";
    if (mark[s->ref - 1] & IN_SLOT)
      return "two slots refer to one record";
    mark[s->ref - 1] |= IN_SLOT;
    const struct pl__seen_rec *r = rec(t, s->ref - 1);
    if (r->lane == PL__SEEN_FREE)
      return "a slot refers to a free record";
    if (tag_of(r->h1) != s->tag)
      return "a slot's tag is not its record's";
    uint64_t h[2] = {r->h1, r->h2};
    if (probe(t, h) != i) /* an empty slot or the same hash earlier on its way from home */
      return "a slot is not where a lookup of its hash ends";
  }
  return n == t->n ? NULL : "the count is not the number of slots in use";
}

static const char *check_heaps(const struct pl__seen *t, const struct pl__seen_heap *const *heaps,
                               size_t n_heaps, uint8_t *mark) {
  for (size_t k = 0; k < n_heaps; k++) {
    const struct pl__seen_heap *hp = heaps[k];
    if (hp->n > hp->cap)
      return "a heap holds more than its capacity";
    for (size_t i = 0; i < hp->n; i++) {
      uint32_t idx = hp->v[i];
      if (idx >= t->used || (mark[idx] & IN_HEAP))
        return "a heap entry is out of range or in two places";
      mark[idx] |= IN_HEAP;
      if (rec(t, idx)->lane != k)
        return "a record is in another lane's heap";
      if (i > 0 && when(t, hp->v[(i - 1) / 2]) > when(t, idx))
        return "a heap is out of order";
    }
  }
  return NULL;
}

const char *pl__seen_check(const struct pl__seen *t, const struct pl__seen_heap *const *heaps,
                           size_t n_heaps) {
  if (t->used > t->n_chunks * CHUNK)
    return "more records handed out than the chunks hold";
  uint8_t *mark = calloc(t->used ? t->used : 1, 1);
  if (mark == NULL)
    return "out of memory";
  const char *why = check_slots(t, mark);
  if (why == NULL)
    why = check_heaps(t, heaps, n_heaps, mark);
  size_t steps = 0;
  for (uint32_t i = t->free_head; why == NULL && i != NONE; i = rec(t, i)->next) {
    if (i >= t->used || mark[i] != 0 || ++steps > t->used)
      why = "the free list is broken";
    else if (rec(t, i)->lane != PL__SEEN_FREE)
      why = "a record on the free list is not marked free";
    else
      mark[i] = IN_FREE;
  }
  for (size_t i = 0; why == NULL && i < t->used; i++)
    if (mark[i] != (IN_SLOT | IN_HEAP) && mark[i] != IN_FREE)
      why = "a record is lost, or in a slot without a heap entry (or the reverse)";
  free(mark);
  return why;
}
