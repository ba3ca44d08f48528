/* Per-CSU event stores and generators, and the Search and GetAllCommerceEvents pages.
 *
 * The generator runs on a clock of wall milliseconds (sim__now). Carts open at the CSU's rate (mean
 * 3.5 events per cart: 1-4 AddCartLines, then the Checkout, 0.2-2.5 s apart); everything a cart
 * does is drawn from its own seed, so the events (ids, times, data, late commits) depend only on
 * --seed and the start time, never on when the timer happens to fire. An event waits in a commit
 * queue until its commit time and only then enters the sorted store Search reads. Scripted events
 * (events_script.c) wait in the same queue; the stale Search cache is search_cache.c.
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
#define EVENTS_PER_CART 3.5 /* mean of 1-4 AddCartLines, plus the Checkout */

const char *const sim__type_names[2] = {"AddCartLines", "Checkout"};

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
/* Search and GetAllCommerceEvents pages */
/* ---------------------------------------------------------------------------------------------- */

static void write_event(struct csr_jw *jw, const struct sim__csu *u, const struct sim__ev *e,
                        int type) {
  char when[CSR_TIME_BUF];
  csr_time_format(e->time_ms, when, sizeof(when));
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "EventTransactionId", sim__str(&u->pool, e->txn));
  csr_jw_kstr(jw, "EventDateTime", when);
  csr_jw_kstr(jw, "EventType", sim__type_names[type]);
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
  size_t total, a = 0, b = 0;
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
  sim__jw_context(jw, c, u, "CommerceEventsController");
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
