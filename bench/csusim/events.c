/* Per-CSU event stores and generators, the Search pages, and the stale Search cache.
 *
 * The generator runs on a clock of wall milliseconds (sim__now). Carts open at the CSU's rate (mean
 * 3.5 events per cart: 1-4 AddCartLines, then the Checkout, 0.2-2.5 s apart); everything a cart
 * does is drawn from its own seed, so the events (ids, times, data, late commits) depend only on
 * --seed and the start time, never on when the timer happens to fire. An event waits in a commit
 * queue until its commit time and only then enters the sorted store Search reads.
 *
 * Scripted events (--events FILE) are a JSON array of objects with the CSU wire fields:
 *
 *   [{"csu": 0, "EventType": "Checkout", "EventTransactionId": "HOUSTON-HOUSTON-17-1721824109286",
 *     "EventDateTime": "2024-07-24T14:17:02.16Z", "EventDataAreaId": "usrt", "EventData": "{}",
 *     "EventChannelId": 5637144592, "EventTerminalId": "HOUSTON-17", "EventStaffId": "000168",
 *     "EventCustomerId": "1002", "commit_after_ms": 0, "ReceiptEmail": "karen@contoso.com"}]
 *
 * Required: EventType ("AddCartLines" or "Checkout"), EventTransactionId (1-44 characters), and
 * either EventDateTime (ISO-8601; kept to the millisecond) or "offset_ms" (milliseconds after the
 * sim started, may be negative). Optional: "csu" (default 0), EventDataAreaId ("usrt"), EventData
 * ("{}" for Checkout, "[]" for AddCartLines, at most 63 bytes), EventChannelId (the CSU's first
 * channel), EventTerminalId, EventStaffId, EventCustomerId (""), "commit_after_ms" (when the event
 * becomes visible, ms after start; default 0), "ReceiptEmail" (Checkout only: the order's
 * ReceiptEmail; by default it is drawn like a generated order's). Unknown members, over-long fields
 * (the channel DB's column sizes) and two events with one primary key are rejected.
 */
#include "csu_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csurelay/timefmt.h"

#define TICK_MS         10
#define EVENTS_PER_CART 3.5  /* mean of 1-4 AddCartLines, plus the Checkout */
#define CACHE_MAX       2048 /* stale pages kept at most; the oldest go first */
#define CACHE_BUCKETS   1024
#define CACHE_TYPE_MAX  32 /* longer EventTypes match no row and are never cached */

static const char *const TYPE_NAMES[2] = {"AddCartLines", "Checkout"};

/* ---------------------------------------------------------------------------------------------- */
/* Hash index and string pool */
/* ---------------------------------------------------------------------------------------------- */

uint32_t sim__hash(const char *s, size_t n, bool fold_case) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (fold_case && ch >= 'A' && ch <= 'Z')
      ch = (unsigned char)(ch - 'A' + 'a');
    h = (h ^ ch) * 16777619u;
  }
  return h;
}

static int htab_grow(struct sim__htab *h) {
  size_t cap = h->cap ? h->cap * 2 : 64;
  uint64_t *slots = calloc(cap, sizeof(*slots));
  if (slots == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < h->cap; i++) {
    if (h->slots[i] == 0)
      continue;
    size_t pos = (size_t)(h->slots[i] >> 32) & (cap - 1);
    while (slots[pos] != 0)
      pos = (pos + 1) & (cap - 1);
    slots[pos] = h->slots[i];
  }
  free(h->slots);
  h->slots = slots;
  h->cap = cap;
  return 0;
}

int sim__htab_put(struct sim__htab *h, uint32_t hash, uint32_t value) {
  if ((h->used + 1) * 2 > h->cap && htab_grow(h) < 0)
    return -ENOMEM;
  size_t pos = hash & (h->cap - 1);
  while (h->slots[pos] != 0)
    pos = (pos + 1) & (h->cap - 1);
  h->slots[pos] = ((uint64_t)hash << 32) | ((uint64_t)value + 1);
  h->used++;
  return 0;
}

void sim__htab_find(const struct sim__htab *h, uint32_t hash, struct sim__hiter *it) {
  it->hash = hash;
  it->pos = h->cap ? hash & (h->cap - 1) : 0;
}

bool sim__htab_next(const struct sim__htab *h, struct sim__hiter *it, uint32_t *value) {
  if (h->cap == 0)
    return false;
  for (;;) {
    uint64_t slot = h->slots[it->pos];
    if (slot == 0)
      return false;
    it->pos = (it->pos + 1) & (h->cap - 1);
    if ((uint32_t)(slot >> 32) == it->hash) {
      *value = (uint32_t)(slot & 0xffffffffu) - 1;
      return true;
    }
  }
}

void sim__htab_free(struct sim__htab *h) {
  free(h->slots);
  memset(h, 0, sizeof(*h));
}

uint32_t sim__pool_lookup(const struct sim__pool *p, const char *s, size_t n) {
  if (n == 0)
    return 0;
  struct sim__hiter it;
  uint32_t off;
  sim__htab_find(&p->idx, sim__hash(s, n, false), &it);
  while (sim__htab_next(&p->idx, &it, &off))
    if (strncmp(p->buf + off, s, n) == 0 && p->buf[off + n] == '\0')
      return off;
  return SIM_NO_STR;
}

uint32_t sim__intern(struct sim__pool *p, const char *s, size_t n) {
  uint32_t off = sim__pool_lookup(p, s, n);
  if (off != SIM_NO_STR)
    return off;
  if (p->len + n + 1 > p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 4096;
    while (cap < p->len + n + 1)
      cap *= 2;
    if (cap >= SIM_NO_STR)
      return SIM_NO_STR;
    char *buf = realloc(p->buf, cap);
    if (buf == NULL)
      return SIM_NO_STR;
    p->buf = buf;
    p->cap = cap;
  }
  off = (uint32_t)p->len;
  memcpy(p->buf + off, s, n);
  p->buf[off + n] = '\0';
  if (sim__htab_put(&p->idx, sim__hash(s, n, false), off) < 0)
    return SIM_NO_STR;
  p->len += n + 1;
  return off;
}

static uint32_t intern_str(struct sim__pool *p, const char *s) {
  return sim__intern(p, s, strlen(s));
}

/* ---------------------------------------------------------------------------------------------- */
/* Stores and the commit queue */
/* ---------------------------------------------------------------------------------------------- */

size_t sim__store_upper(const struct sim__store *s, int64_t t) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->ev[mid].time_ms <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static size_t store_lower(const struct sim__store *s, int64_t t) {
  return t == INT64_MIN ? 0 : sim__store_upper(s, t - 1);
}

/* Late commits land in the middle: the tail moves, which is bounded by late_commit_max_s of events
 * (appends, the common case, move nothing). */
static int store_insert(struct sim__store *s, const struct sim__ev *ev) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    struct sim__ev *n = realloc(s->ev, cap * sizeof(*n));
    if (n == NULL)
      return -ENOMEM;
    s->ev = n;
    s->cap = cap;
  }
  size_t at =
      s->n && s->ev[s->n - 1].time_ms <= ev->time_ms ? s->n : sim__store_upper(s, ev->time_ms);
  memmove(s->ev + at + 1, s->ev + at, (s->n - at) * sizeof(*ev));
  s->ev[at] = *ev;
  s->n++;
  return 0;
}

static bool pend_less(const struct sim__pend *a, const struct sim__pend *b) {
  return a->commit_ms < b->commit_ms || (a->commit_ms == b->commit_ms && a->seq < b->seq);
}

static int pend_push(struct sim__csu *u, struct sim__pend *p) {
  if (u->npend == u->cappend) {
    size_t cap = u->cappend ? u->cappend * 2 : 256;
    struct sim__pend *n = realloc(u->pend, cap * sizeof(*n));
    if (n == NULL)
      return -ENOMEM;
    u->pend = n;
    u->cappend = cap;
  }
  p->seq = u->pend_seq++;
  size_t i = u->npend++;
  while (i > 0 && pend_less(p, &u->pend[(i - 1) / 2])) {
    u->pend[i] = u->pend[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  u->pend[i] = *p;
  return 0;
}

static void pend_pop(struct sim__csu *u) {
  struct sim__pend last = u->pend[--u->npend];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= u->npend)
      break;
    if (c + 1 < u->npend && pend_less(&u->pend[c + 1], &u->pend[c]))
      c++;
    if (!pend_less(&u->pend[c], &last))
      break;
    u->pend[i] = u->pend[c];
    i = c;
  }
  if (u->npend > 0)
    u->pend[i] = last;
}

/* ---------------------------------------------------------------------------------------------- */
/* Commit */
/* ---------------------------------------------------------------------------------------------- */

/* A cart id's pool offset is unique to it, so the offset stands for the string in the cart index.
 */
static uint32_t txn_hash(uint32_t off) {
  return off * 2654435761u;
}

const struct sim__cart *sim__cart_find(const struct sim__csu *u, const char *txn) {
  size_t n = strlen(txn);
  uint32_t off = sim__pool_lookup(&u->pool, txn, n);
  if (off == SIM_NO_STR)
    return NULL;
  struct sim__hiter it;
  uint32_t i;
  sim__htab_find(&u->cart_idx, txn_hash(off), &it);
  while (sim__htab_next(&u->cart_idx, &it, &i))
    if (u->carts[i].txn == off)
      return &u->carts[i];
  return NULL;
}

static int channel_index(const struct sim__csu *u, int64_t id) {
  for (int i = 0; i < SIM_CHANNELS_PER_CSU; i++)
    if (u->channels[i] == id)
      return i;
  return -1;
}

static struct sim__cart *cart_commit(struct sim__csu *u, const struct sim__pend *p) {
  struct sim__cart *k = (struct sim__cart *)sim__cart_find(u, sim__str(&u->pool, p->ev.txn));
  if (k == NULL) {
    if (u->ncarts == u->capcarts) {
      size_t cap = u->capcarts ? u->capcarts * 2 : 256;
      struct sim__cart *n = realloc(u->carts, cap * sizeof(*n));
      if (n == NULL)
        return NULL;
      u->carts = n;
      u->capcarts = cap;
    }
    if (sim__htab_put(&u->cart_idx, txn_hash(p->ev.txn), (uint32_t)u->ncarts) < 0)
      return NULL;
    k = &u->carts[u->ncarts++];
  }
  *k = (struct sim__cart){.seed = p->seed,
                          .time_ms = p->ev.time_ms,
                          .channel_id = p->ev.channel_id,
                          .txn = p->ev.txn,
                          .customer = p->ev.customer,
                          .terminal = p->ev.terminal,
                          .staff = p->ev.staff,
                          .receipt = p->receipt,
                          .channel = channel_index(u, p->ev.channel_id)};
  return k;
}

static void copy(char *dst, size_t len, const char *src) {
  snprintf(dst, len, "%s", src);
}

static void ledger_commit(struct sim_csus *c, struct sim__csu *u, const struct sim__pend *p,
                          const struct sim__cart *k, int64_t now_ms) {
  if (c->sim->ledger == NULL)
    return;
  struct sim_event e;
  memset(&e, 0, sizeof(e));
  e.csu = u->index;
  e.type = (enum sim_event_type)p->type;
  copy(e.txn, sizeof(e.txn), sim__str(&u->pool, p->ev.txn));
  e.time_ms = p->ev.time_ms;
  csr_time_format(p->ev.time_ms, e.time_text, sizeof(e.time_text));
  e.commit_ms = now_ms;
  copy(e.data_area, sizeof(e.data_area), sim__str(&u->pool, p->ev.area));
  e.channel_id = p->ev.channel_id;
  copy(e.terminal, sizeof(e.terminal), sim__str(&u->pool, p->ev.terminal));
  copy(e.staff, sizeof(e.staff), sim__str(&u->pool, p->ev.staff));
  copy(e.customer, sizeof(e.customer), sim__str(&u->pool, p->ev.customer));
  copy(e.data, sizeof(e.data), sim__str(&u->pool, p->ev.data));
  if (k != NULL) {
    struct sim__order_sum sum;
    sim__order_summary(c, u, k, &sum);
    copy(e.binding, sizeof(e.binding), sum.binding);
    copy(e.email, sizeof(e.email), sum.email);
    copy(e.amount, sizeof(e.amount), sum.amount);
  }
  sim_ledger_generated(c->sim->ledger, &e);
}

static void commit(struct sim_csus *c, struct sim__csu *u, const struct sim__pend *p,
                   int64_t now_ms) {
  if (store_insert(&u->st[p->type], &p->ev) < 0)
    return;
  const struct sim__cart *k = NULL;
  if (p->type == SIM_CHECKOUT && (k = cart_commit(u, p)) == NULL)
    return;
  c->committed++;
  ledger_commit(c, u, p, k, now_ms);
}

/* ---------------------------------------------------------------------------------------------- */
/* The generator */
/* ---------------------------------------------------------------------------------------------- */

uint64_t sim__mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

const struct sim_event_faults *sim__knobs(const struct sim_csus *c) {
  return c->knobs ? c->knobs : sim_faults_events(c->sim->faults);
}

int64_t sim__now(const struct sim_csus *c) {
  if (c->sim->loop == NULL || !c->started)
    return c->vnow;
  return c->wall0 + (int64_t)(rx_now_ms(c->sim->loop) - c->mono0);
}

/* A late commit keeps its EventDateTime but becomes visible up to late_commit_max_s later; the draw
 * comes from the cart's seed so it does not depend on timer phase. */
static int64_t commit_time(const struct sim_event_faults *k, uint64_t seed, unsigned i,
                           int64_t time_ms) {
  if (k->late_commit_rate <= 0 || k->late_commit_max_s == 0)
    return time_ms;
  uint64_t r = sim__mix(seed, 0x1a7e + i);
  if ((double)(r >> 11) / (double)(1ULL << 53) >= k->late_commit_rate)
    return time_ms;
  return time_ms + 1 + (int64_t)(sim__mix(r, 7) % (k->late_commit_max_s * 1000));
}

static void cart_ids(struct sim__csu *u, const struct sim__cart_plan *pl, int64_t open_ms,
                     struct sim__ev *ev) {
  char store[24], terminal[40], txn[96], staff[16];
  int64_t no = open_ms > u->last_cart_no ? open_ms : u->last_cart_no + 1;
  u->last_cart_no = no;
  snprintf(store, sizeof(store), pl->channel == 1 ? "%s2" : "%s", u->store);
  if (pl->channel == 2) {
    terminal[0] = staff[0] = '\0';
    snprintf(txn, sizeof(txn), "%s-WEB-%lld", u->store, (long long)no);
  } else {
    snprintf(terminal, sizeof(terminal), "%s-%u", store, pl->terminal);
    snprintf(staff, sizeof(staff), "%06u", pl->staff);
    snprintf(txn, sizeof(txn), "%s-%s-%lld", store, terminal, (long long)no);
  }
  ev->channel_id = u->channels[pl->channel];
  ev->txn = intern_str(&u->pool, txn);
  ev->terminal = intern_str(&u->pool, terminal);
  ev->staff = intern_str(&u->pool, staff);
  ev->customer = pl->guest ? 0 : intern_str(&u->pool, u->cust[pl->customer].account);
  ev->area = intern_str(&u->pool, SIM_DATA_AREA);
}

static void open_cart(struct sim_csus *c, struct sim__csu *u, int64_t open_ms, uint64_t seed) {
  struct sim__cart_plan pl;
  sim__cart_plan(seed, &pl);
  struct sim__pend p;
  memset(&p, 0, sizeof(p));
  p.seed = seed;
  p.receipt = SIM_NO_STR;
  cart_ids(u, &pl, open_ms, &p.ev);
  const struct sim_event_faults *k = sim__knobs(c);
  for (unsigned i = 0; i <= pl.lines; i++) {
    char data[64];
    if (i < pl.lines)
      sim__cart_data(&pl, i, data, sizeof(data));
    else
      copy(data, sizeof(data), "{}");
    p.type = i < pl.lines ? SIM_ADDCARTLINES : SIM_CHECKOUT;
    p.ev.data = intern_str(&u->pool, data);
    p.ev.time_ms = open_ms + pl.gaps_ms[i];
    p.commit_ms = commit_time(k, seed, i, p.ev.time_ms);
    if (p.ev.txn == SIM_NO_STR || p.ev.data == SIM_NO_STR || pend_push(u, &p) < 0)
      return;
  }
}

static void burst(struct sim_csus *c, struct sim__csu *u, int64_t at_ms, unsigned n) {
  /* one AddCartLines each at at_ms, every Checkout at at_ms + 1 s: a tie group in both stores */
  for (unsigned i = 0; i < n; i++) {
    uint64_t seed = sim__mix(sim__mix(c->seed, u->index), 0xb0000000ULL + u->bursts * 100000 + i);
    open_cart(c, u, at_ms, (seed & ~SIM_SEED_SCRIPT) | SIM_SEED_BURST);
  }
  u->bursts++;
}

static void generate(struct sim_csus *c, struct sim__csu *u, int64_t now_ms) {
  const struct sim_event_faults *k = sim__knobs(c);
  if (u->rate > 0) {
    double mean_ms = 1000.0 * EVENTS_PER_CART / u->rate;
    while (u->next_open_ms <= (double)now_ms) {
      uint64_t seed = sim__mix(sim__mix(c->seed, u->index), ++u->cart_seq) &
                      ~(SIM_SEED_BURST | SIM_SEED_SCRIPT);
      open_cart(c, u, (int64_t)u->next_open_ms, seed);
      u->next_open_ms += mean_ms * 2.0 * (double)(rx_rand64(&u->rng) >> 11) / (double)(1ULL << 53);
    }
  }
  if (k->same_time_every_s == 0 || k->same_time_burst == 0)
    return;
  if (u->next_burst_ms <= c->wall0) /* bursts switched on at run time */
    u->next_burst_ms = now_ms + (int64_t)k->same_time_every_s * 1000;
  while (u->next_burst_ms <= now_ms) {
    burst(c, u, u->next_burst_ms, k->same_time_burst);
    u->next_burst_ms += (int64_t)k->same_time_every_s * 1000;
  }
}

void sim__advance(struct sim_csus *c, int64_t now_ms) {
  c->vnow = now_ms;
  for (unsigned i = 0; i < c->n; i++) {
    struct sim__csu *u = &c->csu[i];
    generate(c, u, now_ms);
    while (u->npend > 0 && u->pend[0].commit_ms <= now_ms) {
      struct sim__pend p = u->pend[0];
      pend_pop(u);
      commit(c, u, &p, now_ms);
    }
  }
}

static uint64_t on_tick(struct rx_timer *t) {
  struct sim_csus *c = t->data;
  if (c == NULL)
    return RX_TIMER_STOP;
  sim__advance(c, sim__now(c));
  return TICK_MS;
}

static void on_timer_closed(struct rx_timer *t) {
  free(t);
}

/* ---------------------------------------------------------------------------------------------- */
/* Start, stop */
/* ---------------------------------------------------------------------------------------------- */

struct sim__script {
  struct sim__pend p;
  unsigned csu;
  bool relative;     /* time_ms is an offset from the start */
  int64_t commit_ms; /* after the start */
};

void sim__begin(struct sim_csus *c, int64_t wall_ms) {
  c->wall0 = wall_ms;
  c->vnow = wall_ms;
  for (unsigned i = 0; i < c->n; i++) {
    struct sim__csu *u = &c->csu[i];
    u->rate = c->sim->opts.rate / (double)c->n;
    u->next_open_ms = (double)wall_ms;
    u->last_cart_no = wall_ms;
    u->next_burst_ms = wall_ms + (int64_t)sim__knobs(c)->same_time_every_s * 1000;
  }
  for (size_t i = 0; i < c->nscript; i++) {
    struct sim__script *s = &c->script[i];
    struct sim__pend p = s->p;
    if (s->relative)
      p.ev.time_ms += wall_ms;
    p.commit_ms = wall_ms + s->commit_ms;
    if (pend_push(&c->csu[s->csu], &p) < 0)
      break;
  }
  free(c->script);
  c->script = NULL;
  c->nscript = 0;
}

int sim_csus_start(struct sim_csus *c) {
  if (c == NULL || c->started)
    return -EINVAL;
  struct sim *sim = c->sim;
  sim__begin(c, sim->started_wall_ms ? sim->started_wall_ms : rx_wall_ms());
  c->mono0 = rx_now_ms(sim->loop);
  c->started = true;
  c->timer = calloc(1, sizeof(*c->timer));
  if (c->timer == NULL)
    return -ENOMEM;
  int rc = rx_timer_init(c->timer, sim->loop);
  if (rc < 0) {
    free(c->timer);
    c->timer = NULL;
    return rc;
  }
  c->timer->data = c;
  sim__advance(c, sim__now(c)); /* scripted events due at start are visible at once */
  return rx_timer_start(c->timer, on_tick, TICK_MS);
}

void sim_csus_stop(struct sim_csus *c) {
  if (c == NULL || c->timer == NULL)
    return;
  c->timer->data = NULL;
  rx_timer_close(c->timer, on_timer_closed);
  c->timer = NULL;
}

void sim__events_free(struct sim_csus *c) {
  for (unsigned i = 0; i < c->n; i++) {
    struct sim__csu *u = &c->csu[i];
    free(u->st[0].ev);
    free(u->st[1].ev);
    free(u->carts);
    free(u->pend);
    sim__htab_free(&u->cart_idx);
    sim__htab_free(&u->pool.idx);
    free(u->pool.buf);
  }
  free(c->script);
  c->script = NULL;
}

int sim__events_init(struct sim__csu *u) {
  u->pool.buf = malloc(4096);
  if (u->pool.buf == NULL)
    return -ENOMEM;
  u->pool.buf[0] = '\0'; /* offset 0 is "" */
  u->pool.len = 1;
  u->pool.cap = 4096;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Scripted events */
/* ---------------------------------------------------------------------------------------------- */

static const char *const SCRIPT_KEYS[] = {
    "csu",           "EventType",          "EventTransactionId",
    "EventDateTime", "offset_ms",          "EventDataAreaId",
    "EventData",     "EventChannelId",     "EventTerminalId",
    "EventStaffId",  "EventCustomerId",    "commit_after_ms",
    "ReceiptEmail",  "ExtensionProperties"};

static int known_keys(yajl_val o, char *why, size_t len) {
  for (size_t i = 0; i < o->u.object.len; i++) {
    bool ok = false;
    for (size_t j = 0; j < sizeof(SCRIPT_KEYS) / sizeof(SCRIPT_KEYS[0]) && !ok; j++)
      ok = strcmp(o->u.object.keys[i], SCRIPT_KEYS[j]) == 0;
    if (!ok) {
      snprintf(why, len, "unknown member \"%s\"", o->u.object.keys[i]);
      return -1;
    }
  }
  return 0;
}

/* A string member no longer than `max` (the channel DB's column size), interned; `def` if absent.
 */
static int script_str(struct sim__csu *u, yajl_val o, const char *key, size_t max, const char *def,
                      uint32_t *out, char *why, size_t len) {
  yajl_val v = csr_json_get(o, key);
  const char *s = v ? csr_json_str(v) : def;
  if (s == NULL || strlen(s) > max) {
    snprintf(why, len, "%s must be a string of at most %zu characters", key, max);
    return -1;
  }
  *out = intern_str(&u->pool, s);
  return *out == SIM_NO_STR ? -1 : 0;
}

static int script_int(yajl_val o, const char *key, int64_t def, int64_t *out, char *why,
                      size_t len) {
  if (csr_json_get(o, key) == NULL) {
    *out = def;
    return 0;
  }
  if (csr_json_get_int(o, key, out) < 0) {
    snprintf(why, len, "%s must be an integer", key);
    return -1;
  }
  return 0;
}

static int script_time(yajl_val o, struct sim__script *s, char *why, size_t len) {
  const char *text = csr_json_get_str(o, "EventDateTime");
  if (text != NULL) {
    if (csr_time_parse(text, &s->p.ev.time_ms) < 0) {
      snprintf(why, len, "EventDateTime is not an ISO-8601 instant");
      return -1;
    }
    return 0;
  }
  if (csr_json_get(o, "offset_ms") == NULL) {
    snprintf(why, len, "needs EventDateTime or offset_ms");
    return -1;
  }
  s->relative = true;
  return script_int(o, "offset_ms", 0, &s->p.ev.time_ms, why, len);
}

static int script_type(yajl_val o, struct sim__script *s, char *why, size_t len) {
  const char *type = csr_json_get_str(o, "EventType");
  for (int t = 0; type != NULL && t < 2; t++)
    if (strcmp(type, TYPE_NAMES[t]) == 0) {
      s->p.type = (uint8_t)t;
      return 0;
    }
  snprintf(why, len, "EventType must be \"AddCartLines\" or \"Checkout\"");
  return -1;
}

static int script_one(struct sim_csus *c, yajl_val o, struct sim__script *s, char *why,
                      size_t len) {
  int64_t csu, chan, after;
  memset(s, 0, sizeof(*s));
  s->p.receipt = SIM_NO_STR;
  if (!YAJL_IS_OBJECT(o)) {
    snprintf(why, len, "not an object");
    return -1;
  }
  if (known_keys(o, why, len) < 0 || script_int(o, "csu", 0, &csu, why, len) < 0 ||
      script_type(o, s, why, len) < 0 || script_time(o, s, why, len) < 0)
    return -1;
  if (csu < 0 || csu >= (int64_t)c->n) {
    snprintf(why, len, "csu %lld is not one of the %u CSUs", (long long)csu, c->n);
    return -1;
  }
  struct sim__csu *u = &c->csu[csu];
  s->csu = (unsigned)csu;
  const char *data = s->p.type == SIM_CHECKOUT ? "{}" : "[]";
  if (script_str(u, o, "EventTransactionId", 44, NULL, &s->p.ev.txn, why, len) < 0 ||
      script_str(u, o, "EventDataAreaId", 4, SIM_DATA_AREA, &s->p.ev.area, why, len) < 0 ||
      script_str(u, o, "EventData", 63, data, &s->p.ev.data, why, len) < 0 ||
      script_str(u, o, "EventTerminalId", 10, "", &s->p.ev.terminal, why, len) < 0 ||
      script_str(u, o, "EventStaffId", 25, "", &s->p.ev.staff, why, len) < 0 ||
      script_str(u, o, "EventCustomerId", 38, "", &s->p.ev.customer, why, len) < 0 ||
      script_int(o, "EventChannelId", u->channels[0], &chan, why, len) < 0 ||
      script_int(o, "commit_after_ms", 0, &after, why, len) < 0)
    return -1;
  if (s->p.ev.txn == 0 || after < 0) {
    snprintf(why, len,
             s->p.ev.txn == 0 ? "EventTransactionId is empty"
                              : "commit_after_ms must not be negative");
    return -1;
  }
  if (csr_json_get(o, "ReceiptEmail") != NULL &&
      script_str(u, o, "ReceiptEmail", 80, NULL, &s->p.receipt, why, len) < 0)
    return -1;
  s->p.ev.channel_id = chan;
  s->commit_ms = after;
  const char *txn = sim__str(&u->pool, s->p.ev.txn);
  s->p.seed = (sim__mix(sim__mix(c->seed, (uint64_t)csu), sim__hash(txn, strlen(txn), false)) &
               ~SIM_SEED_BURST) |
              SIM_SEED_SCRIPT;
  return 0;
}

/* The channel DB's primary key: (txn, type, time, area), per CSU. Pool offsets stand for strings.
 */
static int script_cmp(const void *a, const void *b) {
  const struct sim__script *x = a, *y = b;
  int64_t d[] = {(int64_t)x->csu - y->csu, (int64_t)x->p.type - y->p.type,
                 (int64_t)x->p.ev.txn - y->p.ev.txn, (int64_t)x->p.ev.area - y->p.ev.area,
                 (int64_t)x->relative - y->relative};
  for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
    if (d[i] != 0)
      return d[i] < 0 ? -1 : 1;
  return x->p.ev.time_ms < y->p.ev.time_ms ? -1 : x->p.ev.time_ms > y->p.ev.time_ms;
}

static int script_load(struct sim_csus *c, yajl_val doc, char *why, size_t len) {
  size_t n = csr_json_len(doc);
  if (!YAJL_IS_ARRAY(doc)) {
    snprintf(why, len, "not a JSON array of events");
    return -1;
  }
  struct sim__script *s = calloc(n ? n : 1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    char one[160];
    if (script_one(c, csr_json_at(doc, i), &s[i], one, sizeof(one)) < 0) {
      snprintf(why, len, "event %zu: %s", i, one);
      free(s);
      return -1;
    }
  }
  qsort(s, n, sizeof(*s), script_cmp);
  for (size_t i = 1; i < n; i++)
    if (script_cmp(&s[i - 1], &s[i]) == 0) {
      snprintf(why, len, "two events share the primary key (cart %s, %s, one EventDateTime)",
               sim__str(&c->csu[s[i].csu].pool, s[i].p.ev.txn), TYPE_NAMES[s[i].p.type]);
      free(s);
      return -1;
    }
  free(c->script);
  c->script = s;
  c->nscript = n;
  return 0;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap)
      break;
    char *more = realloc(buf, cap * 2);
    if (more == NULL) {
      free(buf);
      buf = NULL;
    } else {
      buf = more;
      cap *= 2;
    }
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

int sim_csus_load_events(struct sim_csus *c, const char *path, char *why, size_t len) {
  char inner[256] = "";
  size_t n = 0;
  if (c == NULL || path == NULL || c->started)
    return -EINVAL;
  char *text = read_file(path, &n);
  if (text == NULL) {
    snprintf(why, len, "--events %s: %s", path, strerror(errno ? errno : EIO));
    return -errno ? -errno : -EIO;
  }
  yajl_val doc = csr_json_parse(text, n, inner, sizeof(inner));
  free(text);
  int rc = doc == NULL ? CSR_EPARSE : script_load(c, doc, inner, sizeof(inner));
  csr_json_free(doc);
  if (rc < 0) {
    snprintf(why, len, "--events %s: %s", path, inner);
    return rc == -ENOMEM ? rc : CSR_ECONFIG;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Search and GetAllCommerceEvents pages */
/* ---------------------------------------------------------------------------------------------- */

static void write_event(struct csr_jw *jw, const struct sim__csu *u, const struct sim__ev *e,
                        int type) {
  char when[CSR_TIME_BUF];
  csr_time_format(e->time_ms, when, sizeof(when));
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "EventTransactionId", sim__str(&u->pool, e->txn));
  csr_jw_kstr(jw, "EventDateTime", when);
  csr_jw_kstr(jw, "EventType", TYPE_NAMES[type]);
  csr_jw_kstr(jw, "EventDataAreaId", sim__str(&u->pool, e->area));
  csr_jw_kstr(jw, "EventData", sim__str(&u->pool, e->data));
  csr_jw_kint(jw, "EventChannelId", e->channel_id);
  csr_jw_kstr(jw, "EventTerminalId", sim__str(&u->pool, e->terminal));
  csr_jw_kstr(jw, "EventStaffId", sim__str(&u->pool, e->staff));
  csr_jw_kstr(jw, "EventCustomerId", sim__str(&u->pool, e->customer));
  csr_jw_key(jw, "ExtensionProperties");
  csr_jw_arr(jw);
  csr_jw_arr_end(jw);
  csr_jw_obj_end(jw);
}

/* SQL's ORDER BY without a tiebreaker: each query sees every tie group in a fresh order. Writes the
 * part of the group [g0, g1) that falls in the page [p, end). */
static void write_shuffled(struct csr_jw *jw, const struct sim__csu *u, const struct sim__store *s,
                           int type, size_t g0, size_t g1, size_t p, size_t end, uint64_t seed) {
  size_t n = g1 - g0;
  uint32_t *perm = malloc(n * sizeof(*perm));
  if (perm == NULL) {
    for (; p < end; p++)
      write_event(jw, u, &s->ev[p], type);
    return;
  }
  for (size_t i = 0; i < n; i++)
    perm[i] = (uint32_t)i;
  uint64_t rng = sim__mix(seed, g0) | 1;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = rx_rand64(&rng) % (i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (; p < end; p++)
    write_event(jw, u, &s->ev[g0 + perm[p - g0]], type);
  free(perm);
}

static void write_search(struct csr_jw *jw, struct sim__csu *u, const struct sim__query *q,
                         size_t a, size_t b) {
  const struct sim__store *s = &u->st[q->type];
  uint64_t seed = q->shuffle ? rx_rand64(&u->tie_rng) : 0;
  for (size_t p = a; p < b;) {
    int64_t t = s->ev[p].time_ms;
    size_t g0 = q->shuffle ? store_lower(s, t) : p;
    size_t g1 = q->shuffle ? sim__store_upper(s, t) : p + 1;
    size_t end = g1 < b ? g1 : b;
    if (g1 - g0 > 1) {
      write_shuffled(jw, u, s, q->type, g0, g1, p, end, seed);
    } else {
      write_event(jw, u, &s->ev[p], q->type);
    }
    p = end;
  }
}

/* Both stores merged by time (AddCartLines first on a tie); O(skip + top), GetAll is off the hot
 * path (no caller in the sample uses it). */
static void write_all(struct csr_jw *jw, struct sim__csu *u, const struct sim__query *q) {
  size_t i[2] = {0, 0}, skip = q->skip, left = q->top;
  while (left > 0) {
    int t;
    if (i[0] < u->st[0].n && i[1] < u->st[1].n)
      t = u->st[1].ev[i[1]].time_ms < u->st[0].ev[i[0]].time_ms;
    else if (i[0] < u->st[0].n || i[1] < u->st[1].n)
      t = i[0] >= u->st[0].n;
    else
      break;
    if (skip > 0) {
      skip--;
    } else {
      write_event(jw, u, &u->st[t].ev[i[t]], t);
      left--;
    }
    i[t]++;
  }
}

size_t sim__write_page(struct sim_csus *c, struct sim__csu *u, const struct sim__query *q,
                       struct csr_jw *jw) {
  char ctx[256];
  size_t total, a = 0, b = 0;
  snprintf(ctx, sizeof(ctx), "%s/csu%u/Commerce/$metadata#CommerceEventsController",
           c->sim->base_url, u->index);
  if (q->type < 0) {
    total = u->st[0].n + u->st[1].n;
    a = q->skip < total ? q->skip : total;
    b = a + (q->top < total - a ? q->top : total - a);
  } else if (q->type > 1) {
    total = 0; /* an EventType no row has */
  } else {
    const struct sim__store *s = &u->st[q->type];
    size_t lo = q->from_ms == INT64_MIN ? 0 : sim__store_upper(s, q->from_ms);
    size_t hi = q->to_ms == INT64_MAX ? s->n : sim__store_upper(s, q->to_ms);
    total = hi > lo ? hi - lo : 0;
    a = lo + (q->skip < total ? q->skip : total);
    b = a + (q->top < (lo + total - a) ? q->top : (lo + total - a));
  }
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "@odata.context", ctx);
  if (q->count)
    csr_jw_kint(jw, "@odata.count", (int64_t)total);
  csr_jw_key(jw, "value");
  csr_jw_arr(jw);
  if (q->type < 0)
    write_all(jw, u, q);
  else
    write_search(jw, u, q, a, b);
  csr_jw_arr_end(jw);
  csr_jw_obj_end(jw);
  return b - a;
}

/* ---------------------------------------------------------------------------------------------- */
/* The stale Search cache (reference section 1.4, W-C3) */
/* ---------------------------------------------------------------------------------------------- */

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

static int64_t whole_s(int64_t ms) {
  return ms == INT64_MIN || ms == INT64_MAX ? ms : (ms >= 0 ? ms / 1000 : -((999 - ms) / 1000));
}

static unsigned cent_bucket(unsigned csu, const char *type, const struct sim__query *q) {
  uint64_t h = sim__mix(
      sim__mix(sim__mix(csu, sim__hash(type, strlen(type), false)), (uint64_t)whole_s(q->from_ms)),
      (uint64_t)whole_s(q->to_ms));
  return (unsigned)(sim__mix(h, q->skip * 31 + q->top + q->count) % CACHE_BUCKETS);
}

static struct cent **cent_find(struct sim__cache *k, unsigned csu, const char *type,
                               const struct sim__query *q) {
  struct cent **pp = &k->buckets[cent_bucket(csu, type, q)];
  for (; *pp != NULL; pp = &(*pp)->chain) {
    struct cent *e = *pp;
    if (e->csu == csu && strcmp(e->type, type) == 0 && e->from_s == whole_s(q->from_ms) &&
        e->to_s == whole_s(q->to_ms) && e->skip == q->skip && e->top == q->top &&
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
                     .from_s = whole_s(q->from_ms),
                     .to_s = whole_s(q->to_ms),
                     .skip = q->skip,
                     .top = q->top,
                     .count = q->count,
                     .body = copy_body,
                     .len = len,
                     .expires_ms = now + (int64_t)kn->stale_cache_ttl_s * 1000};
  copy(e->type, sizeof(e->type), type);
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
