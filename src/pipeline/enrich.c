/* The enrichment fetcher (SPEC §3 "Enrichment"; the contract is in pipeline.h).
 *
 * A fetch waits on a *flight*: one GET of one URL on one CSU, however many fetches want it. A
 * flight is joinable (in the `flights` table) from its creation until it answers; it is queued on
 * its CSU until a slot frees, then asks the identity's token cache for a token, then GETs. The
 * answer is classified once, parsed once, and handed to every waiter with a reference each.
 *
 * Why flights outlive their waiters: cancelling a token request or an HTTP request completes it
 * later, from the loop, so a flight nobody wants any more (an *orphan*) leaves the table at once
 * (a new fetch for the same URL starts a new flight) but keeps its slot until its own callback
 * runs. The per-CSU bound therefore counts real connections, never fewer.
 *
 * Each CSU's slots are a window that adapts (TCP Vegas's rule, applied to requests as Netflix's
 * concurrency-limits does). The answers come in rounds, a window's worth each; a round's shortest
 * round trip is compared with the shortest one seen lately. Taking the round's shortest, as TCP
 * Vegas does, is what makes the rule usable here: single round trips jitter by this loop's own
 * turn (tens of milliseconds under load), which would otherwise read as a queue at a distant CSU
 * and keep its window small. While a round stays near the shortest and the window was full, the
 * CSU answers as fast as it is asked and the window grows by an eighth (it doubles until the first
 * round that sees a queue: Vegas's slow start), up to max_in_flight; once even the round's
 * shortest is longer by a queue's worth, every request waited somewhere (at the CSU, or in this
 * relay's loop, busy with every sink's traffic) and it shrinks by an eighth, down to
 * min_in_flight. A CSU 250 ms away that is asked for 120 documents a second needs ~30 GETs in
 * flight; one on loopback, whose round trip is the loop's own turn, gains nothing beyond a few.
 * 429 and 503 halve the window at once.
 *
 * The cache holds documents, not flights: a customer that answered OK is cached with a reference
 * of its own, looked up before the flights table, and evicted least recently used first. Expiry
 * is checked at lookup; an entry nobody asks for again leaves by eviction.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/json.h"
#include "csurelay/log.h"
#include "csurelay/pipeline.h"
#include "csurelay/sink.h"
#include "hash.h"

#define DEFAULT_TTL_MS      300000
#define DEFAULT_MAX_ENTRIES 50000
#define DEFAULT_MAX_BYTES   (32u << 20)
#define DEFAULT_IN_FLIGHT   64 /* the window's ceiling */
#define DEFAULT_MIN_FLIGHT  4
#define START_WINDOW        8
#define RTT_EPOCH_MS        30000 /* the shortest round trip is forgotten after two epochs */
#define MAX_ID_BYTES        512

#define ORDER_PATH                                                                                 \
  "Commerce/SalesOrders/GetSalesOrderDetailsByTransactionId(transactionId=@p1,"                    \
  "searchLocationValue=1)?@p1="
#define CUSTOMER_PATH "Commerce/Customers("
#define API_VERSION   "api-version=7.3"

/* A shared result: a document and its references (waiters, the cache). */
struct pl__enrich_doc {
  unsigned refs;
  size_t json_len;
  char json[]; /* the answer's text (checked: one JSON object); bodies splice it */
};

/* An intrusive chained hash table; a node is found by its hash, then by the owner's own key. */
struct hnode {
  struct hnode *next;
  uint64_t hash;
};

struct htab {
  struct hnode **b;
  size_t nb; /* a power of two, or 0 before the first insert */
  size_t n;
};

/* A CSU's adaptive window (see the file comment). Round trips in microseconds. */
struct window {
  double limit;
  uint64_t rtt_min;   /* the shortest of this epoch and the last; 0 before the first answer */
  uint64_t epoch_min; /* the shortest of this epoch so far */
  uint64_t epoch_end; /* loop ms */
  uint64_t round_min; /* the shortest of this round so far */
  unsigned round_n;   /* answers in this round */
  unsigned round_full; /* of which sent while the window was full */
  bool slow_start;     /* no round has seen a queue yet: the window doubles */
};

struct csu_state {
  char *name, *url, *oun, *identity;
  struct flight *qhead, *qtail;
  bool pumping;
  struct window win;
  struct pl_enrich_csu_stats stats;
};

enum fstate { F_QUEUED, F_TOKEN, F_HTTP };

struct flight {
  struct hnode node; /* in e->flights while joinable */
  bool joinable;
  bool orphan;    /* nobody waits: finish quietly once the pending callback runs */
  bool refreshed; /* a 401 already dropped the token once */
  bool saturated; /* its CSU's window was full when it took its slot */
  uint64_t sent_us;
  enum fstate state;
  enum pl_fetch_kind kind;
  struct pl_enrich *e;
  struct csu_state *csu;
  char *url;
  char *id;
  struct pl_fetch *head, *tail; /* waiters, oldest first */
  struct flight *qnext;         /* the CSU's queue */
  struct flight *prev, *next;   /* e->all */
  struct pl_tokens *tokens;
  struct pl_token_req treq;
  char *token; /* the token sent, to invalidate exactly that one after a 401 */
  struct rx_http_req http;
};

/* What a flight came to, copied to each waiter. */
struct verdict {
  enum pl_fetch_outcome outcome;
  int status;
  int64_t retry_after_ms;
  char reason[64];
  char excerpt[256];
  struct pl__enrich_doc *doc; /* OK only; the verdict holds one reference */
};

struct centry {
  struct hnode node;
  struct centry *lprev, *lnext; /* e->lru, most recently used first */
  struct pl__enrich_doc *doc;
  uint64_t expires_ms;
  size_t cost;
  size_t csu;
  char id[];
};

struct pl_enrich {
  struct rx_loop *loop;
  struct rx_http *http;
  struct pl_tokens *(*tokens)(void *arg, const char *identity);
  void *tokens_arg;
  struct pl_enrich_opts opts;
  struct csu_state *csus;
  size_t ncsus;
  struct htab flights;
  struct flight *all; /* every flight, orphans included */
  struct htab cache;
  struct centry *lru_head, *lru_tail;
  struct pl_enrich_stats stats;
  bool closing;
  struct rx_fut close_fut;
  void (*close_cb)(void *arg);
  void *close_arg;
};

static void pump(struct csu_state *u, struct pl_enrich *e);
static void get_token(struct flight *f);

/* ---------------------------------------------------------------------------------------------- */
/* Small pieces: hashing, the table, shared documents */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t hash_key(size_t csu, const char *s) {
  uint64_t h = csr_strhash(CSR_FNV1A_BASIS ^ (uint64_t)csu, s);
  return h ^ (h >> 29);
}

static int htab_put(struct htab *t, struct hnode *n) {
  if (t->n >= t->nb) {
    size_t nb = t->nb ? t->nb * 2 : 64;
    struct hnode **b = calloc(nb, sizeof(*b));
    if (b == NULL)
      return UV_ENOMEM;
    for (size_t i = 0; i < t->nb; i++)
      while (t->b[i]) {
        struct hnode *x = t->b[i];
        t->b[i] = x->next;
        x->next = b[x->hash & (nb - 1)];
        b[x->hash & (nb - 1)] = x;
      }
    free(t->b);
    t->b = b;
    t->nb = nb;
  }
  struct hnode **slot = &t->b[n->hash & (t->nb - 1)];
  n->next = *slot;
  *slot = n;
  t->n++;
  return 0;
}

static void htab_del(struct htab *t, struct hnode *n) {
  struct hnode **p = &t->b[n->hash & (t->nb - 1)];
  while (*p != n)
    p = &(*p)->next;
  *p = n->next;
  n->next = NULL;
  t->n--;
}

static struct hnode *htab_first(const struct htab *t, uint64_t hash) {
  struct hnode *n = t->nb ? t->b[hash & (t->nb - 1)] : NULL;
  while (n && n->hash != hash)
    n = n->next;
  return n;
}

static struct hnode *htab_next(struct hnode *n) {
  uint64_t hash = n->hash;
  for (n = n->next; n && n->hash != hash;)
    n = n->next;
  return n;
}

static struct pl__enrich_doc *doc_ref(struct pl__enrich_doc *d) {
  d->refs++;
  return d;
}

static void doc_unref(struct pl__enrich_doc *d) {
  if (d != NULL && --d->refs == 0) {
    free(d);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* URLs */
/* ---------------------------------------------------------------------------------------------- */

static bool unreserved(unsigned char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* Appends the OData literal of `id`, quotes doubled and percent-encoded, between raw quotes. */
static size_t put_literal(char *out, const char *id) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  out[o++] = '\'';
  for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
    for (int twice = *p == '\'' ? 2 : 1; twice > 0; twice--) {
      if (unreserved(*p)) {
        out[o++] = (char)*p;
        continue;
      }
      out[o++] = '%';
      out[o++] = hex[*p >> 4];
      out[o++] = hex[*p & 15];
    }
  }
  out[o++] = '\'';
  return o;
}

/* The URL's length without the NUL, at most: every id byte may become "%27%27". */
static size_t url_max(const char *csu_url, const char *id) {
  return strlen(csu_url) + 1 + sizeof(ORDER_PATH) + 6 * strlen(id) + 2 + sizeof(API_VERSION) + 2;
}

/* Writes the URL into out, which holds url_max() + 1 bytes; returns its length. */
static size_t build_url(char *out, const char *csu_url, enum pl_fetch_kind kind, const char *id) {
  size_t n = strlen(csu_url);
  while (n > 0 && csu_url[n - 1] == '/')
    n--;
  memcpy(out, csu_url, n);
  out[n++] = '/';
  const char *path = kind == PL_FETCH_ORDER ? ORDER_PATH : CUSTOMER_PATH;
  memcpy(out + n, path, strlen(path));
  n += strlen(path);
  n += put_literal(out + n, id);
  const char *tail = kind == PL_FETCH_ORDER ? "&" API_VERSION : ")?" API_VERSION;
  memcpy(out + n, tail, strlen(tail) + 1);
  return n + strlen(tail);
}

int pl_enrich_url(const char *csu_url, enum pl_fetch_kind kind, const char *id, char *buf,
                  size_t len) {
  if (csu_url == NULL || id == NULL || id[0] == '\0' || buf == NULL ||
      (kind != PL_FETCH_ORDER && kind != PL_FETCH_CUSTOMER))
    return UV_EINVAL;
  char *tmp = malloc(url_max(csu_url, id) + 1);
  if (tmp == NULL)
    return UV_ENOMEM;
  size_t n = build_url(tmp, csu_url, kind, id);
  int rc = n < len && n <= INT32_MAX ? (int)n : UV_E2BIG;
  if (rc >= 0)
    memcpy(buf, tmp, n + 1);
  free(tmp);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* The customer cache */
/* ---------------------------------------------------------------------------------------------- */

static void lru_unlink(struct pl_enrich *e, struct centry *c) {
  if (c->lprev)
    c->lprev->lnext = c->lnext;
  else
    e->lru_head = c->lnext;
  if (c->lnext)
    c->lnext->lprev = c->lprev;
  else
    e->lru_tail = c->lprev;
  c->lprev = c->lnext = NULL;
}

static void lru_push(struct pl_enrich *e, struct centry *c) {
  c->lprev = NULL;
  c->lnext = e->lru_head;
  if (e->lru_head)
    e->lru_head->lprev = c;
  else
    e->lru_tail = c;
  e->lru_head = c;
}

static void cache_drop(struct pl_enrich *e, struct centry *c) {
  htab_del(&e->cache, &c->node);
  lru_unlink(e, c);
  e->stats.cache_entries--;
  e->stats.cache_bytes -= c->cost;
  doc_unref(c->doc);
  free(c);
}

static struct centry *cache_find(struct pl_enrich *e, size_t csu, const char *id) {
  for (struct hnode *n = htab_first(&e->cache, hash_key(csu, id)); n; n = htab_next(n)) {
    struct centry *c = RX_CONTAINER_OF(n, struct centry, node);
    if (c->csu == csu && strcmp(c->id, id) == 0)
      return c;
  }
  return NULL;
}

/* A live entry for (csu, id), made most recently used; an expired one is dropped. */
static struct centry *cache_get(struct pl_enrich *e, size_t csu, const char *id) {
  struct centry *c = cache_find(e, csu, id);
  if (c != NULL && rx_now_ms(e->loop) >= c->expires_ms) {
    cache_drop(e, c);
    e->stats.cache_expired++;
    c = NULL;
  }
  if (c != NULL) {
    lru_unlink(e, c);
    lru_push(e, c);
  }
  return c;
}

/* Caches an OK customer. Failing to (memory, a document over the whole budget) costs only a GET. */
static void cache_put(struct pl_enrich *e, size_t csu, const char *id, struct pl__enrich_doc *d) {
  size_t cost = sizeof(*d) + d->json_len + 1 + sizeof(struct centry) + strlen(id) + 1;
  if (e->opts.cache_max_entries == 0 || cost > e->opts.cache_max_bytes)
    return;
  struct centry *old = cache_find(e, csu, id);
  if (old != NULL)
    cache_drop(e, old);
  struct centry *c = calloc(1, sizeof(*c) + strlen(id) + 1);
  if (c == NULL)
    return;
  memcpy(c->id, id, strlen(id) + 1);
  c->csu = csu;
  c->cost = cost;
  c->expires_ms = rx_now_ms(e->loop) + e->opts.customer_ttl_ms;
  c->node.hash = hash_key(csu, id);
  if (htab_put(&e->cache, &c->node) < 0) {
    free(c);
    return;
  }
  c->doc = doc_ref(d);
  lru_push(e, c);
  e->stats.cache_entries++;
  e->stats.cache_bytes += cost;
  while (e->lru_tail != c && (e->stats.cache_entries > e->opts.cache_max_entries ||
                              e->stats.cache_bytes > e->opts.cache_max_bytes)) {
    cache_drop(e, e->lru_tail);
    e->stats.cache_evictions++;
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Waiters */
/* ---------------------------------------------------------------------------------------------- */

static void waiter_unlink(struct flight *f, struct pl_fetch *w) {
  if (w->_prev)
    w->_prev->_next = w->_next;
  else
    f->head = w->_next;
  if (w->_next)
    w->_next->_prev = w->_prev;
  else
    f->tail = w->_prev;
  w->_prev = w->_next = NULL;
  w->_flight = NULL;
}

static void waiter_link(struct flight *f, struct pl_fetch *w) {
  w->_flight = f;
  w->_next = NULL;
  w->_prev = f->tail;
  if (f->tail)
    f->tail->_next = w;
  else
    f->head = w;
  f->tail = w;
}

/* Drops req's error texts. */
static void clear_texts(struct pl_fetch *req) {
  free(req->_texts);
  req->_texts = NULL;
  req->reason = req->excerpt = "";
}

/* Gives req its own copy of an error's texts, in one block. Without memory for it the reason
 * becomes "nomem": the outcome, which decides what happens, is kept either way. */
static void set_texts(struct pl_fetch *req, const char *reason, const char *excerpt) {
  clear_texts(req);
  if (reason[0] == '\0' && excerpt[0] == '\0')
    return;
  size_t rn = strlen(reason) + 1, en = strlen(excerpt) + 1;
  if ((req->_texts = malloc(rn + en)) == NULL) {
    req->reason = "nomem";
    return;
  }
  memcpy(req->_texts, reason, rn);
  memcpy(req->_texts + rn, excerpt, en);
  req->reason = req->_texts;
  req->excerpt = req->_texts + rn;
}

/* Fills req from the verdict and resolves it (its callback runs later, from the loop). */
static void complete(struct pl_enrich *e, struct pl_fetch *req, const struct verdict *v) {
  req->outcome = v->outcome;
  req->status = v->status;
  req->retry_after_ms = v->retry_after_ms;
  set_texts(req, v->reason, v->excerpt);
  if (v->doc != NULL) {
    req->_doc = doc_ref(v->doc);
    req->doc_json = v->doc->json;
    req->doc_json_len = v->doc->json_len;
  }
  uint64_t *count[] = {&e->stats.ok, &e->stats.not_found, &e->stats.retry, &e->stats.dead};
  (*count[v->outcome])++;
  rx_fut_resolve(&req->fut, 0);
}

static void complete_cancelled(struct pl_enrich *e, struct pl_fetch *req) {
  e->stats.cancelled++;
  rx_fut_resolve(&req->fut, UV_ECANCELED);
}

/* ---------------------------------------------------------------------------------------------- */
/* Flights */
/* ---------------------------------------------------------------------------------------------- */

static void maybe_closed(struct pl_enrich *e) {
  if (e->closing && e->all == NULL)
    rx_fut_resolve(&e->close_fut, 0);
}

static void leave_table(struct flight *f) {
  if (f->joinable) {
    htab_del(&f->e->flights, &f->node);
    f->joinable = false;
  }
}

static void queue_remove(struct csu_state *u, struct flight *f) {
  struct flight **p = &u->qhead, *prev = NULL;
  while (*p != f) {
    prev = *p;
    p = &(*p)->qnext;
  }
  *p = f->qnext;
  if (u->qtail == f)
    u->qtail = prev;
  f->qnext = NULL;
  u->stats.queued--;
  f->e->stats.queued--;
}

/* Frees a flight whose callbacks have all run (or never started), and gives its slot on. */
static void flight_free(struct flight *f) {
  struct pl_enrich *e = f->e;
  leave_table(f);
  if (f->state != F_QUEUED) {
    f->csu->stats.in_flight--;
    e->stats.in_flight--;
  }
  if (f->prev)
    f->prev->next = f->next;
  else
    e->all = f->next;
  if (f->next)
    f->next->prev = f->prev;
  rx_http_req_cleanup(&f->http);
  free(f->token);
  free(f->url);
  free(f->id);
  struct csu_state *u = f->csu;
  free(f);
  pump(u, e);
  maybe_closed(e);
}

/* Hands the verdict to every waiter, caches an OK customer, and frees the flight. */
static void finish(struct flight *f, struct verdict *v) {
  struct pl_enrich *e = f->e;
  leave_table(f);
  if (v->outcome == PL_FETCH_OK && f->kind == PL_FETCH_CUSTOMER && !e->closing)
    cache_put(e, (size_t)(f->csu - e->csus), f->id, v->doc);
  if (v->outcome != PL_FETCH_OK)
    CSR_LOG(CSR_DEBUG, "enrich fetch failed", CSR_KS("csu", f->csu->name),
            CSR_KS("kind", f->kind == PL_FETCH_ORDER ? "order" : "customer"),
            CSR_KI("status", v->status), CSR_KS("reason", v->reason));
  while (f->head) {
    struct pl_fetch *w = f->head;
    waiter_unlink(f, w);
    complete(e, w, v);
  }
  doc_unref(v->doc);
  v->doc = NULL;
  flight_free(f);
}

static void finish_with(struct flight *f, enum pl_fetch_outcome outcome, const char *reason,
                        const char *excerpt) {
  struct verdict v = {.outcome = outcome, .retry_after_ms = -1};
  snprintf(v.reason, sizeof(v.reason), "%s", reason);
  snprintf(v.excerpt, sizeof(v.excerpt), "%s", excerpt);
  finish(f, &v);
}

/* Nobody wants the flight any more: it leaves the table now and ends when its callback runs. */
static void abandon(struct flight *f) {
  leave_table(f);
  f->orphan = true;
  switch (f->state) {
    case F_QUEUED:
      queue_remove(f->csu, f);
      flight_free(f);
      break;
    case F_TOKEN:
      pl_tokens_cancel(&f->treq);
      break;
    case F_HTTP:
      rx_http_cancel(&f->http);
      break;
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* The adaptive window */
/* ---------------------------------------------------------------------------------------------- */

static void window_set(struct csu_state *u, const struct pl_enrich *e, double limit) {
  double lo = e->opts.min_in_flight, hi = e->opts.max_in_flight;
  u->win.limit = limit < lo ? lo : limit > hi ? hi : limit;
  u->stats.window = (unsigned)u->win.limit;
}

static void window_init(struct csu_state *u, const struct pl_enrich *e) {
  window_set(u, e, START_WINDOW);
  u->win.slow_start = true;
}

static void shortest_rtt(struct window *w, uint64_t rtt, uint64_t now_ms) {
  if (w->epoch_min == 0 || rtt < w->epoch_min)
    w->epoch_min = rtt;
  if (w->rtt_min == 0 || rtt < w->rtt_min)
    w->rtt_min = rtt;
  if (now_ms >= w->epoch_end) { /* a route that got slower for good is learnt within two epochs */
    w->rtt_min = w->epoch_min;
    w->epoch_min = 0;
    w->epoch_end = now_ms + RTT_EPOCH_MS;
  }
}

static void window_resize(struct csu_state *u, const struct pl_enrich *e, double limit) {
  window_set(u, e, limit);
  u->win.round_n = u->win.round_full = 0;
  u->win.round_min = 0;
}

/* A round's end: Vegas's estimate of the requests queued, limit * (1 - rtt_min / round_min),
 * against thresholds that grow with log10 of the limit. Growing needs a round sent mostly into a
 * full window (an idle CSU's short round trips say nothing about more load); shrinking does not.
 * Until the first round that sees a queue the window doubles (Vegas's slow start): a CSU 250 ms
 * away reaches 64 in three rounds instead of eighteen, before a backlog builds. */
static void window_round(struct csu_state *u, const struct pl_enrich *e) {
  struct window *w = &u->win;
  double limit = w->limit, step = limit / 8 > 1 ? limit / 8 : 1;
  double queued = limit * (1.0 - (double)w->rtt_min / (double)w->round_min);
  double alpha = 3 * log10(limit) > 2 ? 3 * log10(limit) : 2, beta = 2 * alpha;
  bool grow = queued < alpha && 2 * w->round_full >= w->round_n;
  if (queued >= alpha)
    w->slow_start = false;
  if (queued > beta)
    window_resize(u, e, limit - step);
  else if (grow)
    window_resize(u, e, w->slow_start ? 2 * limit : limit + step);
  else
    window_resize(u, e, limit);
}

/* One answered GET joins its CSU's round; a window's worth of answers ends the round. */
static void window_sample(struct flight *f) {
  struct csu_state *u = f->csu;
  struct pl_enrich *e = f->e;
  if (f->http.status == 429 || f->http.status == 503) {
    u->win.slow_start = false;
    window_resize(u, e, u->win.limit / 2);
    return;
  }
  uint64_t rtt = uv_hrtime() / 1000 - f->sent_us;
  rtt = rtt ? rtt : 1;
  struct window *w = &u->win;
  shortest_rtt(w, rtt, rx_now_ms(e->loop));
  if (w->round_min == 0 || rtt < w->round_min)
    w->round_min = rtt;
  w->round_n++;
  w->round_full += f->saturated;
  if (w->round_n >= (unsigned)w->limit)
    window_round(u, e);
}

/* Starts queued flights while the CSU has free slots. Never nested: a flight that ends at once
 * frees its slot inside this loop, and the loop picks the next one up. */
static void pump(struct csu_state *u, struct pl_enrich *e) {
  if (u->pumping)
    return;
  u->pumping = true;
  while (!e->closing && u->qhead && u->stats.in_flight < u->stats.window) {
    struct flight *f = u->qhead;
    queue_remove(u, f);
    f->state = F_TOKEN;
    f->saturated = u->stats.in_flight + 1 >= u->stats.window;
    u->stats.in_flight++;
    e->stats.in_flight++;
    if (u->stats.in_flight > u->stats.in_flight_max)
      u->stats.in_flight_max = u->stats.in_flight;
    get_token(f);
  }
  u->pumping = false;
}

/* The answer, judged by the deliveries' rules; a 2xx must also be a JSON object. */
static void judge(struct flight *f, struct verdict *v) {
  struct sk_delivery d;
  memset(&d, 0, sizeof(d));
  sk_classify_http(&f->http, &d);
  v->status = d.status;
  v->retry_after_ms = d.retry_after_ms;
  memcpy(v->reason, d.reason, sizeof(v->reason));
  memcpy(v->excerpt, d.excerpt, sizeof(v->excerpt));
  if (d.outcome == SK_RETRY)
    v->outcome = PL_FETCH_RETRY;
  else if (d.outcome != SK_DELIVERED)
    v->outcome = d.status == 404 ? PL_FETCH_NOT_FOUND : PL_FETCH_DEAD;
  if (d.outcome != SK_DELIVERED)
    return;
  char err[160] = "";
  int rc = csr_json_check_object(f->http.resp_body, f->http.resp_len, err, sizeof(err));
  v->outcome = PL_FETCH_RETRY;
  if (rc == CSR_EPARSE) {
    /* A truncated or garbled answer is transient: the next GET may well be whole. */
    snprintf(v->reason, sizeof(v->reason), "malformed");
    snprintf(v->excerpt, sizeof(v->excerpt), "a %d answer that is not a JSON object: %s", v->status,
             err);
    return;
  }
  if (rc < 0 || (v->doc = malloc(sizeof(*v->doc) + f->http.resp_len + 1)) == NULL) {
    snprintf(v->reason, sizeof(v->reason), "nomem");
    snprintf(v->excerpt, sizeof(v->excerpt), "%s", csr_strerror(UV_ENOMEM));
    return;
  }
  v->outcome = PL_FETCH_OK;
  f->e->stats.doc_bytes += f->http.resp_len;
  v->doc->refs = 1;
  v->doc->json_len = f->http.resp_len;
  memcpy(v->doc->json, f->http.resp_body, f->http.resp_len + 1);
}

static void on_http(struct rx_fut *fut) {
  struct flight *f = RX_CONTAINER_OF(fut, struct flight, http.fut);
  struct pl_enrich *e = f->e;
  if (f->orphan) {
    flight_free(f);
    return;
  }
  if (fut->result == 0 && f->http.status == 401 && !f->refreshed) {
    /* SPEC §3: a 401 refreshes the token once. Only the token this GET sent is dropped. */
    f->refreshed = true;
    e->stats.token_refreshes++;
    pl_tokens_invalidate(f->tokens, f->token);
    rx_http_req_cleanup(&f->http);
    get_token(f);
    return;
  }
  struct verdict v = {0};
  judge(f, &v);
  if (fut->result == 0)
    window_sample(f);
  finish(f, &v);
}

static int start_http(struct flight *f, const char *token) {
  struct pl_enrich *e = f->e;
  char oun[160];
  size_t n = strlen(token);
  char *auth = malloc(n + sizeof("Authorization: Bearer "));
  free(f->token);
  f->token = malloc(n + 1);
  if (auth == NULL || f->token == NULL) {
    free(auth);
    return UV_ENOMEM;
  }
  memcpy(f->token, token, n + 1);
  snprintf(auth, n + sizeof("Authorization: Bearer "), "Authorization: Bearer %s", token);
  snprintf(oun, sizeof(oun), "OUN: %s", f->csu->oun);
  rx_http_req_init(&f->http);
  f->http.url = f->url;
  f->http.timeout_ms = e->opts.timeout_ms;
  int rc = rx_http_req_header(&f->http, "Accept: application/json");
  if (rc == 0)
    rc = rx_http_req_header(&f->http, oun);
  if (rc == 0)
    rc = rx_http_req_header(&f->http, auth);
  free(auth);
  if (rc == 0)
    rc = rx_http_start(e->http, &f->http, on_http);
  if (rc < 0)
    return rc;
  f->state = F_HTTP;
  f->sent_us = uv_hrtime() / 1000;
  e->stats.requests++;
  f->csu->stats.requests++;
  return 0;
}

static void on_token(struct rx_fut *fut) {
  struct flight *f = RX_CONTAINER_OF(fut, struct flight, treq.fut);
  if (f->orphan) {
    flight_free(f);
    return;
  }
  char why[256];
  if (fut->result < 0) {
    const struct pl_token_stats *ts = pl_tokens_stats(f->tokens);
    snprintf(why, sizeof(why), "%.60s%s%.180s", csr_strerror(fut->result),
             ts->last_error[0] ? ": " : "", ts->last_error);
    finish_with(f, PL_FETCH_RETRY, "token", why);
    return;
  }
  /* The token text is only valid during this callback: start_http copies it. */
  int rc = start_http(f, f->treq.token);
  if (rc < 0) {
    rx_http_req_cleanup(&f->http);
    finish_with(f, PL_FETCH_RETRY, "transport", csr_strerror(rc));
  }
}

static void get_token(struct flight *f) {
  struct pl_enrich *e = f->e;
  f->state = F_TOKEN;
  f->tokens = e->tokens(e->tokens_arg, f->csu->identity);
  if (f->tokens == NULL) {
    finish_with(f, PL_FETCH_DEAD, "no_identity", "no token cache for the CSU's identity");
    return;
  }
  int rc = pl_tokens_get(f->tokens, &f->treq, on_token);
  if (rc < 0)
    finish_with(f, PL_FETCH_RETRY, "token", csr_strerror(rc));
}

/* ---------------------------------------------------------------------------------------------- */
/* Fetches */
/* ---------------------------------------------------------------------------------------------- */

/* By name, never by pointer: a reloaded config's struct may sit at a freed one's address. */
static struct csu_state *find_csu(const struct pl_enrich *e, const struct csr_csu *csu) {
  if (csu == NULL || csu->name == NULL)
    return NULL;
  for (size_t i = 0; i < e->ncsus; i++)
    if (strcmp(e->csus[i].name, csu->name) == 0)
      return &e->csus[i];
  return NULL;
}

static struct flight *find_flight(struct pl_enrich *e, size_t csu, const char *url, uint64_t hash) {
  for (struct hnode *n = htab_first(&e->flights, hash); n; n = htab_next(n)) {
    struct flight *f = RX_CONTAINER_OF(n, struct flight, node);
    if ((size_t)(f->csu - e->csus) == csu && strcmp(f->url, url) == 0)
      return f;
  }
  return NULL;
}

static struct flight *new_flight(struct pl_enrich *e, struct csu_state *u, enum pl_fetch_kind kind,
                                 const char *id, char *url, uint64_t hash) {
  struct flight *f = calloc(1, sizeof(*f));
  char *idc = f ? strdup(id) : NULL;
  if (f != NULL)
    f->node.hash = hash;
  if (idc == NULL || htab_put(&e->flights, &f->node) < 0) {
    free(idc);
    free(f);
    return NULL;
  }
  f->joinable = true;
  f->e = e;
  f->csu = u;
  f->kind = kind;
  f->url = url;
  f->id = idc;
  f->state = F_QUEUED;
  f->next = e->all;
  if (e->all)
    e->all->prev = f;
  e->all = f;
  if (u->qtail)
    u->qtail->qnext = f;
  else
    u->qhead = f;
  u->qtail = f;
  u->stats.queued++;
  e->stats.queued++;
  return f;
}

/* A cache hit: resolved now, so the callback still runs from the loop, never from here. */
static bool serve_cached(struct pl_enrich *e, size_t ci, const char *id, struct pl_fetch *req,
                         rx_fut_cb cb) {
  struct centry *c = cache_get(e, ci, id);
  if (c == NULL)
    return false;
  struct verdict v = {.outcome = PL_FETCH_OK, .status = 200, .retry_after_ms = -1, .doc = c->doc};
  e->stats.fetches++;
  e->stats.cache_hits++;
  rx_fut_init(&req->fut, e->loop, cb);
  complete(e, req, &v);
  return true;
}

static int fetch(struct pl_enrich *e, const struct csr_csu *csu, enum pl_fetch_kind kind,
                 const char *id, struct pl_fetch *req, rx_fut_cb cb) {
  if (e == NULL || req == NULL || cb == NULL || id == NULL || id[0] == '\0' ||
      strlen(id) > MAX_ID_BYTES)
    return UV_EINVAL;
  struct csu_state *u = find_csu(e, csu);
  if (u == NULL)
    return UV_EINVAL;
  if (e->closing)
    return UV_ECANCELED;
  if (rx_fut_pending(&req->fut) || req->_flight != NULL)
    return UV_EBUSY;
  size_t ci = (size_t)(u - e->csus);
  pl_fetch_release(req);
  req->outcome = PL_FETCH_RETRY;
  req->status = 0;
  req->retry_after_ms = -1;
  if (kind == PL_FETCH_CUSTOMER && serve_cached(e, ci, id, req, cb))
    return 0;
  char *url = malloc(url_max(u->url, id) + 1);
  if (url == NULL)
    return UV_ENOMEM;
  build_url(url, u->url, kind, id);
  uint64_t hash = hash_key(ci, url);
  struct flight *f = find_flight(e, ci, url, hash);
  if (f != NULL) {
    free(url);
    e->stats.coalesced++;
  } else if ((f = new_flight(e, u, kind, id, url, hash)) == NULL) {
    free(url);
    return UV_ENOMEM;
  }
  e->stats.fetches++;
  if (kind == PL_FETCH_CUSTOMER)
    e->stats.cache_misses++;
  rx_fut_init(&req->fut, e->loop, cb);
  waiter_link(f, req);
  if (f->state == F_QUEUED)
    pump(u, e);
  return 0;
}

int pl_enrich_order(struct pl_enrich *e, const struct csr_csu *csu, const char *cart_id,
                    struct pl_fetch *req, rx_fut_cb cb) {
  return fetch(e, csu, PL_FETCH_ORDER, cart_id, req, cb);
}

int pl_enrich_customer(struct pl_enrich *e, const struct csr_csu *csu, const char *customer_id,
                       struct pl_fetch *req, rx_fut_cb cb) {
  return fetch(e, csu, PL_FETCH_CUSTOMER, customer_id, req, cb);
}

void pl_fetch_cancel(struct pl_fetch *req) {
  struct flight *f = req ? req->_flight : NULL;
  if (f == NULL)
    return;
  waiter_unlink(f, req);
  complete_cancelled(f->e, req);
  if (f->head == NULL)
    abandon(f);
}

void pl_fetch_release(struct pl_fetch *req) {
  if (req == NULL)
    return;
  doc_unref(req->_doc);
  req->_doc = NULL;
  req->doc_json = NULL;
  req->doc_json_len = 0;
  clear_texts(req);
}

/* ---------------------------------------------------------------------------------------------- */
/* Create, stats, destroy */
/* ---------------------------------------------------------------------------------------------- */

static void free_csus(struct csu_state *u, size_t n) {
  for (size_t i = 0; u != NULL && i < n; i++) {
    free(u[i].name);
    free(u[i].url);
    free(u[i].oun);
    free(u[i].identity);
  }
  free(u);
}

static char *dup_or_empty(const char *s) {
  return strdup(s ? s : "");
}

int pl_enrich_create(struct rx_loop *loop, struct rx_http *http, const struct csr_csu *csus,
                     size_t n_csus, struct pl_tokens *(*tokens)(void *arg, const char *identity),
                     void *tokens_arg, const struct pl_enrich_opts *opts, struct pl_enrich **out) {
  if (loop == NULL || http == NULL || csus == NULL || n_csus == 0 || tokens == NULL || out == NULL)
    return UV_EINVAL;
  for (size_t i = 0; i < n_csus; i++)
    if (csus[i].name == NULL || csus[i].url == NULL || csus[i].url[0] == '\0')
      return UV_EINVAL;
  struct pl_enrich *e = calloc(1, sizeof(*e));
  struct csu_state *u = e ? calloc(n_csus, sizeof(*u)) : NULL;
  bool ok = u != NULL;
  for (size_t i = 0; ok && i < n_csus; i++) {
    const char *ident = csus[i].identity ? csus[i].identity->name : csus[i].identity_name;
    u[i].name = dup_or_empty(csus[i].name);
    u[i].url = dup_or_empty(csus[i].url);
    u[i].oun = dup_or_empty(csus[i].oun);
    u[i].identity = dup_or_empty(ident);
    ok = u[i].name && u[i].url && u[i].oun && u[i].identity;
  }
  if (!ok) {
    free_csus(u, n_csus);
    free(e);
    return UV_ENOMEM;
  }
  e->loop = loop;
  e->http = http;
  e->tokens = tokens;
  e->tokens_arg = tokens_arg;
  e->csus = u;
  e->ncsus = n_csus;
  if (opts != NULL)
    e->opts = *opts;
  if (e->opts.customer_ttl_ms == 0)
    e->opts.customer_ttl_ms = DEFAULT_TTL_MS;
  if (e->opts.cache_max_entries == 0)
    e->opts.cache_max_entries = DEFAULT_MAX_ENTRIES;
  if (e->opts.cache_max_bytes == 0)
    e->opts.cache_max_bytes = DEFAULT_MAX_BYTES;
  if (e->opts.max_in_flight == 0)
    e->opts.max_in_flight = DEFAULT_IN_FLIGHT;
  if (e->opts.min_in_flight == 0)
    e->opts.min_in_flight = DEFAULT_MIN_FLIGHT;
  if (e->opts.min_in_flight > e->opts.max_in_flight)
    e->opts.min_in_flight = e->opts.max_in_flight;
  for (size_t i = 0; i < n_csus; i++)
    window_init(&u[i], e);
  *out = e;
  return 0;
}

const struct pl_enrich_stats *pl_enrich_stats(const struct pl_enrich *e) {
  return &e->stats;
}

const struct pl_enrich_csu_stats *pl_enrich_csu_stats(const struct pl_enrich *e,
                                                      const struct csr_csu *csu) {
  const struct csu_state *u = find_csu(e, csu);
  return u ? &u->stats : NULL;
}

static void on_closed(struct rx_fut *fut) {
  struct pl_enrich *e = RX_CONTAINER_OF(fut, struct pl_enrich, close_fut);
  void (*cb)(void *arg) = e->close_cb;
  void *arg = e->close_arg;
  free(e->flights.b);
  free(e->cache.b);
  free_csus(e->csus, e->ncsus);
  free(e);
  if (cb)
    cb(arg);
}

void pl_enrich_destroy(struct pl_enrich *e, void (*cb)(void *arg), void *arg) {
  if (e == NULL || e->closing)
    return;
  e->closing = true;
  e->close_cb = cb;
  e->close_arg = arg;
  rx_fut_init(&e->close_fut, e->loop, on_closed);
  while (e->lru_head)
    cache_drop(e, e->lru_head);
  /* Queued flights are freed inside abandon(); the others end from their own callbacks. */
  struct flight *f = e->all, *next;
  for (; f != NULL; f = next) {
    next = f->next;
    while (f->head) {
      struct pl_fetch *w = f->head;
      waiter_unlink(f, w);
      complete_cancelled(e, w);
    }
    if (!f->orphan)
      abandon(f);
  }
  maybe_closed(e);
}
