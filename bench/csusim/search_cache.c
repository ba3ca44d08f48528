/* The stale Search cache (reference section 1.4, W-C3): with events.stale_cache on, a non-empty
 * Search page is answered again, as it was, for the same key until its TTL runs out. The key is the
 * CSU, the EventType as sent and the QueryResultSettings (window in whole seconds, $skip, $top,
 * $count), as the real settings hash covers them all. Bounded by CACHE_MAX pages, oldest first.
 */
#include "csu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX      2048 /* stale pages kept at most; the oldest go first */
#define CACHE_BUCKETS  1024
#define CACHE_TYPE_MAX 32 /* longer EventTypes match no row and are never cached */

struct cent {
  struct cent *chain, *older; /* bucket chain; FIFO from the oldest */
  unsigned bucket, csu;
  char type[CACHE_TYPE_MAX];
  int64_t from_s, to_s;
  size_t skip, top;
  bool count;
  int64_t expires_ms;
  char *body;
  size_t len;
};

struct sim__cache {
  struct cent *buckets[CACHE_BUCKETS];
  struct cent *oldest, *newest;
  size_t n;
};

static unsigned cent_bucket(unsigned csu, const char *type, const struct sim__query *q) {
  uint64_t h = sim__mix(sim__mix(sim__mix(csu, sim__hash(type, strlen(type), false)),
                                 (uint64_t)sim__whole_s(q->from_ms)),
                        (uint64_t)sim__whole_s(q->to_ms));
  return (unsigned)(sim__mix(h, q->skip * 31 + q->top + q->count) % CACHE_BUCKETS);
}

static struct cent **cent_find(struct sim__cache *k, unsigned csu, const char *type,
                               const struct sim__query *q) {
  struct cent **pp = &k->buckets[cent_bucket(csu, type, q)];
  for (; *pp != NULL; pp = &(*pp)->chain) {
    struct cent *e = *pp;
    if (e->csu == csu && strcmp(e->type, type) == 0 && e->from_s == sim__whole_s(q->from_ms) &&
        e->to_s == sim__whole_s(q->to_ms) && e->skip == q->skip && e->top == q->top &&
        e->count == q->count)
      return pp;
  }
  return pp;
}

static void cent_drop_oldest(struct sim__cache *k) {
  struct cent *e = k->oldest;
  struct cent **pp = &k->buckets[e->bucket];
  while (*pp != e)
    pp = &(*pp)->chain;
  *pp = e->chain;
  k->oldest = e->older;
  if (k->oldest == NULL)
    k->newest = NULL;
  free(e->body);
  free(e);
  k->n--;
}

const char *sim__cache_get(struct sim_csus *c, unsigned csu, const char *type,
                           const struct sim__query *q, size_t *len) {
  struct sim__cache *k = c->cache;
  if (k == NULL || strlen(type) >= CACHE_TYPE_MAX)
    return NULL;
  struct cent *e = *cent_find(k, csu, type, q);
  if (e == NULL || e->expires_ms <= sim__now(c))
    return NULL;
  *len = e->len;
  return e->body;
}

void sim__cache_put(struct sim_csus *c, unsigned csu, const char *type, const struct sim__query *q,
                    const char *body, size_t len) {
  const struct sim_event_faults *kn = sim__knobs(c);
  if (c->cache == NULL && (c->cache = calloc(1, sizeof(*c->cache))) == NULL)
    return;
  struct sim__cache *k = c->cache;
  int64_t now = sim__now(c);
  while (k->oldest != NULL && (k->n >= CACHE_MAX || k->oldest->expires_ms <= now))
    cent_drop_oldest(k);
  if (strlen(type) >= CACHE_TYPE_MAX || *cent_find(k, csu, type, q) != NULL)
    return; /* an expired twin is still queued: skip rather than keep two */
  struct cent *e = calloc(1, sizeof(*e));
  char *copy_body = malloc(len + 1);
  if (e == NULL || copy_body == NULL) {
    free(e);
    free(copy_body);
    return;
  }
  memcpy(copy_body, body, len);
  *e = (struct cent){.csu = csu,
                     .bucket = cent_bucket(csu, type, q),
                     .from_s = sim__whole_s(q->from_ms),
                     .to_s = sim__whole_s(q->to_ms),
                     .skip = q->skip,
                     .top = q->top,
                     .count = q->count,
                     .body = copy_body,
                     .len = len,
                     .expires_ms = now + (int64_t)kn->stale_cache_ttl_s * 1000};
  snprintf(e->type, sizeof(e->type), "%s", type);
  struct cent **pp = cent_find(k, csu, type, q);
  *pp = e;
  if (k->newest)
    k->newest->older = e;
  else
    k->oldest = e;
  k->newest = e;
  k->n++;
}

void sim__cache_free(struct sim_csus *c) {
  if (c->cache == NULL)
    return;
  while (c->cache->oldest != NULL)
    cent_drop_oldest(c->cache);
  free(c->cache);
  c->cache = NULL;
}
