/* csusim ledger: every event generated and every delivery received, so a test or the bench can
 * prove that nothing was lost or delivered twice (the sample's weaknesses, reference section 8),
 * and measure latency from EventDateTime to the first receipt.
 *
 * The bench generates millions of events, so one event costs one 40-byte record, its
 * EventTransactionId (and "binding\0email\0amount" for a Checkout) in a chunked arena, one slot in
 * the id table (and one in the binding table for a Checkout), and 12 bytes per sink for its
 * receipts. The full event id is rebuilt from the record when needed; the tables keep each key's
 * hash, so a rebuild happens only on a hash match.
 *
 * Sink 0 is the Journeys trigger (matched by msdynmkt_bindingid); the others are webhook receivers
 * named by the path /hooks/{name} (matched by Idempotency-Key = event id). The records are here;
 * the HTTP side (/ledger, /ledger/events, /ledger/diff, /ledger/reset, /hooks/{name}) is
 * ledger_http.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "ledger_internal.h"

#define CHUNK_BYTES (1u << 20)

struct sim__chunk {
  struct sim__chunk *next;
  size_t used, cap;
  char data[];
};

struct sim__slot {
  uint32_t idx; /* record index + 1; 0 = empty */
  uint32_t hash;
};

struct sim__emailc {
  const char *email; /* lower-cased */
  uint32_t a, b;     /* contacts: created; customers: created, updated */
};

/* ---------------------------------------------------------------------------------------------- */
/* Arena and hash tables */
/* ---------------------------------------------------------------------------------------------- */

static void arena_free(struct sim__arena *a) {
  while (a->head) {
    struct sim__chunk *c = a->head;
    a->head = c->next;
    free(c);
  }
}

/* Copies `n` bytes and a NUL; NULL on out of memory. */
static char *arena_put(struct sim__arena *a, const char *s, size_t n) {
  if (a->head == NULL || a->head->cap - a->head->used < n + 1) {
    size_t cap = n + 1 > CHUNK_BYTES ? n + 1 : CHUNK_BYTES;
    struct sim__chunk *c = malloc(sizeof(*c) + cap);
    if (c == NULL)
      return NULL;
    c->next = a->head;
    c->used = 0;
    c->cap = cap;
    a->head = c;
  }
  char *p = a->head->data + a->head->used;
  memcpy(p, s, n);
  p[n] = '\0';
  a->head->used += n + 1;
  return p;
}

static uint32_t hash32(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
  return (uint32_t)(h ^ (h >> 32));
}

static int tab_grow(struct sim__tab *t) {
  size_t cap = t->mask ? (t->mask + 1) * 2 : 1024;
  struct sim__slot *s = calloc(cap, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  for (size_t i = 0; t->mask && i <= t->mask; i++) {
    if (t->s[i].idx == 0)
      continue;
    size_t j = t->s[i].hash & (cap - 1);
    while (s[j].idx != 0)
      j = (j + 1) & (cap - 1);
    s[j] = t->s[i];
  }
  free(t->s);
  t->s = s;
  t->mask = cap - 1;
  return 0;
}

static int tab_put(struct sim__tab *t, uint32_t hash, uint32_t idx) {
  if ((t->used + 1) * 2 > t->mask + 1 && tab_grow(t) != 0)
    return -ENOMEM;
  size_t j = hash & t->mask;
  while (t->s[j].idx != 0)
    j = (j + 1) & t->mask;
  t->s[j] = (struct sim__slot){.idx = idx + 1, .hash = hash};
  t->used++;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Records */
/* ---------------------------------------------------------------------------------------------- */

const char *sim__type_name(unsigned type) {
  return type == SIM_CHECKOUT ? "Checkout" : "AddCartLines";
}

void sim_event_id(const struct sim_event *ev, char *buf, size_t len) {
  snprintf(buf, len, "csu%u|%s|%s|%s|%s", ev->csu, ev->data_area, sim__type_name(ev->type), ev->txn,
           ev->time_text);
}

/* The EventTransactionId's length in the tail. */
static int rec_txn_len(const struct sim__rec *r) {
  return (int)(r->canon ? strlen(r->tail) : (size_t)(strrchr(r->tail, '|') - r->tail));
}

/* The EventDateTime text; `buf` holds CSR_TIME_BUF bytes for a canonical one. */
const char *sim__rec_time(const struct sim__rec *r, char *buf) {
  if (!r->canon)
    return strrchr(r->tail, '|') + 1;
  csr_time_format(r->time_ms, buf, CSR_TIME_BUF);
  return buf;
}

size_t sim__rec_id(const struct sim_ledger *l, const struct sim__rec *r, char *buf, size_t len) {
  char when[CSR_TIME_BUF];
  int n = snprintf(buf, len, "csu%u|%s|%s|%.*s|%s", r->csu, l->areas[r->area],
                   sim__type_name(r->type), rec_txn_len(r), r->tail, sim__rec_time(r, when));
  return n < 0 ? 0 : (size_t)n;
}

const char *sim__co_email(const struct sim__rec *r) {
  return r->co ? r->co + strlen(r->co) + 1 : "";
}

const char *sim__co_amount(const struct sim__rec *r) {
  const char *e = sim__co_email(r);
  return r->co ? e + strlen(e) + 1 : "";
}

/* The record whose event id is `id`, or -1. */
static long find_id(const struct sim_ledger *l, const char *id) {
  if (l->ids.mask == 0)
    return -1;
  size_t n = strlen(id);
  uint32_t h = hash32(id, n);
  char buf[SIM_LEDGER_ID_MAX];
  for (size_t j = h & l->ids.mask; l->ids.s[j].idx != 0; j = (j + 1) & l->ids.mask) {
    if (l->ids.s[j].hash != h)
      continue;
    uint32_t i = l->ids.s[j].idx - 1;
    if (sim__rec_id(l, &l->recs[i], buf, sizeof(buf)) == n && memcmp(buf, id, n) == 0)
      return (long)i;
  }
  return -1;
}

static long find_binding(const struct sim_ledger *l, const char *binding) {
  if (l->bindings.mask == 0)
    return -1;
  uint32_t h = hash32(binding, strlen(binding));
  for (size_t j = h & l->bindings.mask; l->bindings.s[j].idx != 0; j = (j + 1) & l->bindings.mask) {
    uint32_t i = l->bindings.s[j].idx - 1;
    if (l->bindings.s[j].hash == h && strcmp(l->recs[i].co, binding) == 0)
      return (long)i;
  }
  return -1;
}

/* Data areas are four letters and few; a record keeps a one-byte index. */
static int area_index(struct sim_ledger *l, const char *area) {
  for (unsigned i = 0; i < l->nareas; i++)
    if (strcmp(l->areas[i], area) == 0)
      return (int)i;
  if (l->nareas == SIM_LEDGER_AREAS)
    return -ENOSPC;
  snprintf(l->areas[l->nareas], sizeof(l->areas[0]), "%s", area);
  return (int)l->nareas++;
}

static int grow_recs(struct sim_ledger *l) {
  size_t cap = l->cap ? l->cap * 2 : 4096;
  struct sim__rec *recs = realloc(l->recs, cap * sizeof(*recs));
  if (recs == NULL)
    return -ENOMEM;
  l->recs = recs;
  for (unsigned s = 0; s < l->nsinks; s++) {
    struct sim__sink *k = &l->sinks[s];
    int64_t *first = realloc(k->first, cap * sizeof(*first));
    if (first != NULL)
      k->first = first;
    uint32_t *count = first ? realloc(k->count, cap * sizeof(*count)) : NULL;
    if (count == NULL)
      return -ENOMEM;
    k->count = count;
    memset(k->first + l->cap, 0, (cap - l->cap) * sizeof(*first));
    memset(k->count + l->cap, 0, (cap - l->cap) * sizeof(*count));
  }
  l->cap = cap;
  return 0;
}

/* The Checkout block: "binding\0email\0amount", one arena copy. */
static const char *put_checkout(struct sim_ledger *l, const struct sim_event *ev) {
  char buf[sizeof(ev->binding) + sizeof(ev->email) + sizeof(ev->amount)];
  int n = snprintf(buf, sizeof(buf), "%s%c%s%c%s", ev->binding, 0, ev->email, 0, ev->amount);
  return n < 0 ? NULL : arena_put(&l->arena, buf, (size_t)n);
}

void sim_ledger_generated(struct sim_ledger *l, const struct sim_event *ev) {
  char id[SIM_LEDGER_ID_MAX], tail[128], when[CSR_TIME_BUF];
  if (l == NULL || ev == NULL)
    return;
  sim_event_id(ev, id, sizeof(id));
  if (find_id(l, id) >= 0) {
    l->repeated++; /* the generator produced a primary key twice: worth seeing, not recording */
    return;
  }
  int area = area_index(l, ev->data_area);
  if (area < 0 || (l->n == l->cap && grow_recs(l) != 0)) {
    l->dropped++;
    return;
  }
  /* The generator writes times with csr_time_format; only other texts (scripts) are kept. */
  bool canon =
      csr_time_format(ev->time_ms, when, sizeof(when)) > 0 && strcmp(when, ev->time_text) == 0;
  int n = canon ? snprintf(tail, sizeof(tail), "%s", ev->txn)
                : snprintf(tail, sizeof(tail), "%s|%s", ev->txn, ev->time_text);
  struct sim__rec *r = &l->recs[l->n];
  *r = (struct sim__rec){.time_ms = ev->time_ms,
                         .commit_ms = ev->commit_ms,
                         .csu = ev->csu,
                         .type = (uint8_t)ev->type,
                         .area = (uint8_t)area,
                         .canon = canon};
  r->tail = arena_put(&l->arena, tail, (size_t)n);
  if (ev->type == SIM_CHECKOUT)
    r->co = put_checkout(l, ev);
  if (r->tail == NULL || (ev->type == SIM_CHECKOUT && r->co == NULL) ||
      tab_put(&l->ids, hash32(id, strlen(id)), (uint32_t)l->n) != 0) {
    l->dropped++;
    return;
  }
  if (r->co != NULL && r->co[0] != '\0' && find_binding(l, r->co) < 0 &&
      tab_put(&l->bindings, hash32(r->co, strlen(r->co)), (uint32_t)l->n) != 0)
    l->dropped++;
  l->n++;
  l->by_type[ev->type == SIM_CHECKOUT]++;
}

/* ---------------------------------------------------------------------------------------------- */
/* Sinks */
/* ---------------------------------------------------------------------------------------------- */

/* A fresh sink whose receipt arrays match the records' capacity. */
static struct sim__sink *add_sink(struct sim_ledger *l, const char *name) {
  if (l->nsinks == SIM_LEDGER_SINKS || strlen(name) >= sizeof(l->sinks[0].name))
    return NULL;
  struct sim__sink *k = &l->sinks[l->nsinks];
  memset(k, 0, sizeof(*k));
  snprintf(k->name, sizeof(k->name), "%s", name);
  k->first = calloc(l->cap ? l->cap : 1, sizeof(*k->first));
  k->count = calloc(l->cap ? l->cap : 1, sizeof(*k->count));
  if (k->first == NULL || k->count == NULL) {
    free(k->first);
    free(k->count);
    return NULL;
  }
  l->nsinks++;
  return k;
}

/* The webhook receiver `name` (never the trigger at [0]), created when `create`; NULL if none. */
struct sim__sink *sim__hook_sink(struct sim_ledger *l, const char *name, bool create) {
  for (unsigned i = 1; i < l->nsinks; i++)
    if (strcmp(l->sinks[i].name, name) == 0)
      return &l->sinks[i];
  return create ? add_sink(l, name) : NULL;
}

static void note(struct sim_ledger *l, struct sim__sink *k, unsigned what, const char *id,
                 const char *detail) {
  if (k->nnotes[what] == SIM_LEDGER_LIST_CAP)
    return;
  struct sim__note *n = &k->notes[what][k->nnotes[what]];
  n->id = arena_put(&l->arena, id, strlen(id));
  n->detail = detail ? arena_put(&l->arena, detail, strlen(detail)) : NULL;
  if (n->id != NULL)
    k->nnotes[what]++;
}

static void receive(struct sim__sink *k, long idx, int64_t now_ms) {
  if (k->count[idx]++ == 0) {
    k->first[idx] = now_ms;
    k->unique++;
  }
}

/* One field of a trigger call against the event; a mismatch is listed with both values. */
static bool check_field(struct sim_ledger *l, struct sim__sink *k, const char *id,
                        const char *field, const char *want, const char *got) {
  if (got != NULL && strcmp(want, got) == 0)
    return true;
  char detail[256];
  snprintf(detail, sizeof(detail), "%s: expected '%s', got '%s'", field, want,
           got ? got : "(missing or wrong type)");
  note(l, k, SIM_NOTE_MISMATCH, id, detail);
  return false;
}

static bool same_instant(const char *text, int64_t ms) {
  int64_t got;
  return text != NULL && csr_time_parse(text, &got) == 0 && got == ms;
}

static bool check_trigger(struct sim_ledger *l, struct sim__sink *k, long idx, yajl_val body) {
  const struct sim__rec *r = &l->recs[idx];
  char id[SIM_LEDGER_ID_MAX], want[CSR_TIME_BUF];
  sim__rec_id(l, r, id, sizeof(id));
  bool ok = check_field(l, k, id, "msdynmkt_amountpaid", sim__co_amount(r),
                        csr_json_num_text(csr_json_get(body, "msdynmkt_amountpaid")));
  ok &= check_field(l, k, id, "msdynmkt_receiptemail", sim__co_email(r),
                    csr_json_get_str(body, "msdynmkt_receiptemail"));
  const char *ts = csr_json_get_str(body, "msdynmkt_signaltimestamp");
  if (!same_instant(ts, r->time_ms)) {
    csr_time_format(r->time_ms, want, sizeof(want));
    ok &= check_field(l, k, id, "msdynmkt_signaltimestamp", want, ts ? ts : NULL);
  }
  return ok;
}

void sim_ledger_trigger(struct sim_ledger *l, const char *trigger, yajl_val body, int64_t now_ms) {
  if (l == NULL)
    return;
  struct sim__sink *k = &l->sinks[0];
  k->received++;
  const char *binding = csr_json_get_str(body, "msdynmkt_bindingid");
  long idx = binding && binding[0] ? find_binding(l, binding) : -1;
  if (idx < 0) {
    k->unknown++;
    note(l, k, SIM_NOTE_UNKNOWN, binding ? binding : "(no msdynmkt_bindingid)", trigger);
    return;
  }
  receive(k, idx, now_ms);
  if (!check_trigger(l, k, idx, body))
    k->mismatched++;
}

/* The webhook body repeats the event: its key fields must be the ones the id was built from. */
static bool check_details(struct sim_ledger *l, struct sim__sink *k, long idx, yajl_val det) {
  const struct sim__rec *r = &l->recs[idx];
  char id[SIM_LEDGER_ID_MAX], txn[64], when[CSR_TIME_BUF];
  sim__rec_id(l, r, id, sizeof(id));
  snprintf(txn, sizeof(txn), "%.*s", rec_txn_len(r), r->tail);
  bool ok = check_field(l, k, id, "EventType", sim__type_name(r->type),
                        csr_json_get_str(det, "EventType"));
  ok &=
      check_field(l, k, id, "EventTransactionId", txn, csr_json_get_str(det, "EventTransactionId"));
  ok &= check_field(l, k, id, "EventDateTime", sim__rec_time(r, when),
                    csr_json_get_str(det, "EventDateTime"));
  return ok;
}

void sim__record_webhook(struct sim_ledger *l, struct sim__sink *k, const char *id,
                         yajl_val details, int64_t now_ms) {
  k->received++;
  long idx = find_id(l, id);
  if (idx < 0) {
    k->unknown++;
    note(l, k, SIM_NOTE_UNKNOWN, id, NULL);
    return;
  }
  receive(k, idx, now_ms);
  if (!check_details(l, k, idx, details))
    k->mismatched++;
}

/* ---------------------------------------------------------------------------------------------- */
/* Contacts, customers, requests */
/* ---------------------------------------------------------------------------------------------- */

/* The per-email counters for `email` (compared lower-cased), created on first use. */
static struct sim__emailc *email_slot(struct sim_ledger *l, struct sim__emails *m,
                                      const char *email) {
  char low[256];
  size_t n = 0;
  for (; email[n] && n < sizeof(low) - 1; n++)
    low[n] = (char)(email[n] >= 'A' && email[n] <= 'Z' ? email[n] + 32 : email[n]);
  low[n] = '\0';
  uint32_t h = hash32(low, n);
  for (size_t j = m->tab.mask ? h & m->tab.mask : 0; m->tab.mask && m->tab.s[j].idx;
       j = (j + 1) & m->tab.mask) {
    struct sim__emailc *e = &m->items[m->tab.s[j].idx - 1];
    if (m->tab.s[j].hash == h && strcmp(e->email, low) == 0)
      return e;
  }
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 256;
    struct sim__emailc *items = realloc(m->items, cap * sizeof(*items));
    if (items == NULL)
      return NULL;
    m->items = items;
    m->cap = cap;
  }
  struct sim__emailc *e = &m->items[m->n];
  *e = (struct sim__emailc){.email = arena_put(&l->arena, low, n)};
  if (e->email == NULL || tab_put(&m->tab, h, (uint32_t)m->n) != 0)
    return NULL;
  m->n++;
  return e;
}

void sim_ledger_contact(struct sim_ledger *l, const char *email, const char *contact_id) {
  if (l == NULL)
    return;
  l->contacts_created++;
  struct sim__emailc *e = email_slot(l, &l->contacts, email ? email : "");
  if (e != NULL && ++e->a == 2)
    l->duplicate_emails++;
}

void sim_ledger_customer(struct sim_ledger *l, const char *email, const char *account,
                         bool created) {
  if (l == NULL)
    return;
  l->customers[created ? 0 : 1]++;
  struct sim__emailc *e = email_slot(l, &l->customer_emails, email ? email : "");
  if (e != NULL && created)
    e->a++;
  else if (e != NULL)
    e->b++;
}

void sim_ledger_request(struct sim_ledger *l, const char *endpoint, int status) {
  if (l == NULL || endpoint == NULL)
    return;
  for (unsigned i = 0; i < l->nstats; i++) {
    struct sim__reqstat *s = &l->stats[i];
    if (s->status == status && strcmp(s->endpoint, endpoint) == 0) {
      s->n++;
      return;
    }
  }
  if (l->nstats == SIM_LEDGER_STATS)
    return;
  struct sim__reqstat *s = &l->stats[l->nstats++];
  snprintf(s->endpoint, sizeof(s->endpoint), "%s", endpoint);
  s->status = status;
  s->n = 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Lifetime and C accessors */
/* ---------------------------------------------------------------------------------------------- */

static void clear(struct sim_ledger *l) {
  for (unsigned i = 0; i < l->nsinks; i++) {
    free(l->sinks[i].first);
    free(l->sinks[i].count);
  }
  free(l->recs);
  free(l->ids.s);
  free(l->bindings.s);
  free(l->contacts.items);
  free(l->contacts.tab.s);
  free(l->customer_emails.items);
  free(l->customer_emails.tab.s);
  arena_free(&l->arena);
  struct sim *sim = l->sim;
  memset(l, 0, sizeof(*l));
  l->sim = sim;
}

static int init(struct sim_ledger *l) {
  return add_sink(l, "trigger") ? 0 : -ENOMEM;
}

int sim_ledger_create(struct sim *sim, struct sim_ledger **out) {
  struct sim_ledger *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  l->sim = sim;
  if (init(l) != 0) {
    free(l);
    return -ENOMEM;
  }
  *out = l;
  return 0;
}

void sim_ledger_destroy(struct sim_ledger *l) {
  if (l == NULL)
    return;
  clear(l);
  free(l);
}

int sim_ledger_reset(struct sim_ledger *l) {
  clear(l);
  return init(l);
}

void sim_ledger_counts(const struct sim_ledger *l, struct sim_ledger_counts *out) {
  *out = (struct sim_ledger_counts){
      .generated = l->n,
      .checkout = l->by_type[1],
      .addcartlines = l->by_type[0],
      .repeated = l->repeated,
      .dropped = l->dropped,
      .contacts_created = l->contacts_created,
      .contact_emails = l->contacts.n,
      .duplicate_emails = l->duplicate_emails,
      .customers_created = l->customers[0],
      .customers_updated = l->customers[1],
  };
}

/* "trigger" or "webhook:<name>" to the sink; NULL when no such sink has been seen. */
static struct sim__sink *sink_named(const struct sim_ledger *l, const char *spec) {
  if (strcmp(spec, "trigger") == 0)
    return (struct sim__sink *)&l->sinks[0];
  if (strncmp(spec, "webhook:", 8) != 0)
    return NULL;
  return sim__hook_sink((struct sim_ledger *)l, spec + 8, false);
}

int sim_ledger_sink_counts(const struct sim_ledger *l, const char *sink,
                           struct sim_ledger_sink_counts *out) {
  memset(out, 0, sizeof(*out));
  const struct sim__sink *k = sink_named(l, sink);
  if (k == NULL)
    return -ENOENT;
  out->received = k->received;
  out->unique = k->unique;
  out->duplicates = k->received - k->unknown - k->unique;
  out->unknown = k->unknown;
  out->mismatched = k->mismatched;
  out->rejected = k->rejected;
  return 0;
}

uint64_t sim_ledger_requests(const struct sim_ledger *l, const char *endpoint, int status) {
  for (unsigned i = 0; i < l->nstats; i++)
    if (l->stats[i].status == status && strcmp(l->stats[i].endpoint, endpoint) == 0)
      return l->stats[i].n;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Diff */
/* ---------------------------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest rank: the smallest latency with at least q of them at or below it. */
static int64_t rank_of(const int64_t *v, size_t n, unsigned q) {
  size_t r = (n * q + 99) / 100;
  return v[r ? r - 1 : 0];
}

static void walk_one(const struct sim_ledger *l, struct sim__walk *w, size_t i) {
  const struct sim__rec *r = &l->recs[i];
  uint32_t c = w->k ? w->k->count[i] : 0;
  if (w->trigger && sim__co_email(r)[0] == '\0') {
    w->d.skipped_no_email++;
    w->d.unexpected += c > 0;
    return;
  }
  w->d.expected++;
  if (c == 0) {
    if (w->nmissing < SIM_LEDGER_LIST_CAP)
      w->missing[w->nmissing++] = (uint32_t)i;
    w->d.missing++;
    return;
  }
  w->lat[w->d.delivered++] = w->k->first[i] - r->time_ms;
  if (c > 1) {
    if (w->ndup < SIM_LEDGER_LIST_CAP)
      w->dup[w->ndup++] = (uint32_t)i;
    w->d.duplicated++;
  }
}

int sim__ledger_walk(const struct sim_ledger *l, const char *sink, struct sim__walk *w) {
  w->trigger = strcmp(sink, "trigger") == 0;
  if (!w->trigger && (strncmp(sink, "webhook:", 8) != 0 || sink[8] == '\0'))
    return -EINVAL;
  w->k = sink_named(l, sink);
  w->lat = malloc((l->n ? l->n : 1) * sizeof(*w->lat));
  if (w->lat == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < l->n; i++) {
    const struct sim__rec *r = &l->recs[i];
    bool type_ok = (w->type < 0 || r->type == w->type) && (!w->trigger || r->co != NULL);
    if (type_ok && r->commit_ms >= w->from_ms && (w->until_ms <= 0 || r->commit_ms < w->until_ms))
      walk_one(l, w, i); /* the trigger is for Checkouts only (those with a co block) */
  }
  size_t n = w->d.delivered;
  if (n > 0) {
    qsort(w->lat, n, sizeof(*w->lat), cmp_i64);
    w->d.p50 = rank_of(w->lat, n, 50);
    w->d.p90 = rank_of(w->lat, n, 90);
    w->d.p99 = rank_of(w->lat, n, 99);
    w->d.max = w->lat[n - 1];
  }
  return 0;
}

int sim_ledger_diff(const struct sim_ledger *l, const char *sink, int type, int64_t until_ms,
                    struct sim_ledger_diff *out) {
  struct sim__walk *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return -ENOMEM;
  w->type = type;
  w->until_ms = until_ms;
  int rc = sim__ledger_walk(l, sink, w);
  *out = w->d;
  free(w->lat);
  free(w);
  return rc;
}
