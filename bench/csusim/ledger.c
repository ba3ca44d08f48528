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
 * named by the path /hooks/{name} (matched by Idempotency-Key = event id).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "sim.h"

#define ID_MAX      192 /* an event id: csu{i}|area|type|txn(44)|time(~30) fits easily */
#define AREAS       32  /* distinct EventDataAreaIds */
#define SINKS       32  /* the trigger and up to 31 webhook receivers */
#define LIST_CAP    100 /* ids listed per list in /ledger/diff (the counts are always exact) */
#define STATS       512 /* (endpoint, status) pairs */
#define CHUNK_BYTES (1u << 20)

struct chunk {
  struct chunk *next;
  size_t used, cap;
  char data[];
};

struct arena {
  struct chunk *head;
};

struct slot {
  uint32_t idx; /* record index + 1; 0 = empty */
  uint32_t hash;
};

struct tab {
  struct slot *s;
  size_t mask, used;
};

/* One generated event; its id is rebuilt from csu, area, type and tail. */
struct rec {
  const char *tail; /* "txn", or "txn|time" when the time text is not csr_time_format's */
  const char *co;   /* Checkout: "binding\0email\0amount"; NULL otherwise */
  int64_t time_ms;
  int64_t commit_ms;
  uint32_t csu;
  uint8_t type;
  uint8_t area;
  uint8_t canon; /* the EventDateTime text is csr_time_format(time_ms): not stored */
};

enum { NOTE_UNKNOWN, NOTE_MISMATCH };

struct note {
  const char *id;     /* the event id, or the unmatched key as received */
  const char *detail; /* what differed, or the trigger name; may be NULL */
};

struct sink {
  char name[64];
  int64_t *first;  /* per record: wall ms of the first receipt */
  uint32_t *count; /* per record: receipts */
  uint64_t received, unique, unknown, mismatched, rejected;
  struct note notes[2][LIST_CAP]; /* the first unknown keys and mismatches */
  unsigned nnotes[2];
};

struct emailc {
  const char *email; /* lower-cased */
  uint32_t a, b;     /* contacts: created; customers: created, updated */
};

struct emails {
  struct emailc *items;
  size_t n, cap;
  struct tab tab;
};

struct reqstat {
  char endpoint[24];
  int status;
  uint64_t n;
};

struct sim_ledger {
  struct sim *sim;
  struct rec *recs;
  size_t n, cap;
  struct tab ids, bindings;
  struct arena arena;
  char areas[AREAS][8];
  unsigned nareas;
  uint64_t by_type[2];      /* indexed by type == SIM_CHECKOUT */
  uint64_t repeated;        /* an id generated twice (kept once) */
  uint64_t dropped;         /* not recorded: out of memory or too many data areas */
  struct sink sinks[SINKS]; /* [0] is the trigger */
  unsigned nsinks;
  struct emails contacts, customer_emails;
  uint64_t contacts_created, duplicate_emails, customers[2];
  struct reqstat stats[STATS];
  unsigned nstats;
};

/* ---------------------------------------------------------------------------------------------- */
/* Arena and hash tables */
/* ---------------------------------------------------------------------------------------------- */

static void arena_free(struct arena *a) {
  while (a->head) {
    struct chunk *c = a->head;
    a->head = c->next;
    free(c);
  }
}

/* Copies `n` bytes and a NUL; NULL on out of memory. */
static char *arena_put(struct arena *a, const char *s, size_t n) {
  if (a->head == NULL || a->head->cap - a->head->used < n + 1) {
    size_t cap = n + 1 > CHUNK_BYTES ? n + 1 : CHUNK_BYTES;
    struct chunk *c = malloc(sizeof(*c) + cap);
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

static int tab_grow(struct tab *t) {
  size_t cap = t->mask ? (t->mask + 1) * 2 : 1024;
  struct slot *s = calloc(cap, sizeof(*s));
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

static int tab_put(struct tab *t, uint32_t hash, uint32_t idx) {
  if ((t->used + 1) * 2 > t->mask + 1 && tab_grow(t) != 0)
    return -ENOMEM;
  size_t j = hash & t->mask;
  while (t->s[j].idx != 0)
    j = (j + 1) & t->mask;
  t->s[j] = (struct slot){.idx = idx + 1, .hash = hash};
  t->used++;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Records */
/* ---------------------------------------------------------------------------------------------- */

static const char *type_name(unsigned type) {
  return type == SIM_CHECKOUT ? "Checkout" : "AddCartLines";
}

void sim_event_id(const struct sim_event *ev, char *buf, size_t len) {
  snprintf(buf, len, "csu%u|%s|%s|%s|%s", ev->csu, ev->data_area, type_name(ev->type), ev->txn,
           ev->time_text);
}

/* The EventTransactionId's length in the tail. */
static int rec_txn_len(const struct rec *r) {
  return (int)(r->canon ? strlen(r->tail) : (size_t)(strrchr(r->tail, '|') - r->tail));
}

/* The EventDateTime text; `buf` holds CSR_TIME_BUF bytes for a canonical one. */
static const char *rec_time(const struct rec *r, char *buf) {
  if (!r->canon)
    return strrchr(r->tail, '|') + 1;
  csr_time_format(r->time_ms, buf, CSR_TIME_BUF);
  return buf;
}

static size_t rec_id(const struct sim_ledger *l, const struct rec *r, char *buf, size_t len) {
  char when[CSR_TIME_BUF];
  int n = snprintf(buf, len, "csu%u|%s|%s|%.*s|%s", r->csu, l->areas[r->area], type_name(r->type),
                   rec_txn_len(r), r->tail, rec_time(r, when));
  return n < 0 ? 0 : (size_t)n;
}

static const char *co_email(const struct rec *r) {
  return r->co ? r->co + strlen(r->co) + 1 : "";
}

static const char *co_amount(const struct rec *r) {
  const char *e = co_email(r);
  return r->co ? e + strlen(e) + 1 : "";
}

/* The record whose event id is `id`, or -1. */
static long find_id(const struct sim_ledger *l, const char *id) {
  if (l->ids.mask == 0)
    return -1;
  size_t n = strlen(id);
  uint32_t h = hash32(id, n);
  char buf[ID_MAX];
  for (size_t j = h & l->ids.mask; l->ids.s[j].idx != 0; j = (j + 1) & l->ids.mask) {
    if (l->ids.s[j].hash != h)
      continue;
    uint32_t i = l->ids.s[j].idx - 1;
    if (rec_id(l, &l->recs[i], buf, sizeof(buf)) == n && memcmp(buf, id, n) == 0)
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
  if (l->nareas == AREAS)
    return -ENOSPC;
  snprintf(l->areas[l->nareas], sizeof(l->areas[0]), "%s", area);
  return (int)l->nareas++;
}

static int grow_recs(struct sim_ledger *l) {
  size_t cap = l->cap ? l->cap * 2 : 4096;
  struct rec *recs = realloc(l->recs, cap * sizeof(*recs));
  if (recs == NULL)
    return -ENOMEM;
  l->recs = recs;
  for (unsigned s = 0; s < l->nsinks; s++) {
    struct sink *k = &l->sinks[s];
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
  char id[ID_MAX], tail[128], when[CSR_TIME_BUF];
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
  struct rec *r = &l->recs[l->n];
  *r = (struct rec){.time_ms = ev->time_ms,
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
static struct sink *add_sink(struct sim_ledger *l, const char *name) {
  if (l->nsinks == SINKS || strlen(name) >= sizeof(l->sinks[0].name))
    return NULL;
  struct sink *k = &l->sinks[l->nsinks];
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
static struct sink *hook_sink(struct sim_ledger *l, const char *name, bool create) {
  for (unsigned i = 1; i < l->nsinks; i++)
    if (strcmp(l->sinks[i].name, name) == 0)
      return &l->sinks[i];
  return create ? add_sink(l, name) : NULL;
}

static void note(struct sim_ledger *l, struct sink *k, unsigned what, const char *id,
                 const char *detail) {
  if (k->nnotes[what] == LIST_CAP)
    return;
  struct note *n = &k->notes[what][k->nnotes[what]];
  n->id = arena_put(&l->arena, id, strlen(id));
  n->detail = detail ? arena_put(&l->arena, detail, strlen(detail)) : NULL;
  if (n->id != NULL)
    k->nnotes[what]++;
}

static void receive(struct sink *k, long idx, int64_t now_ms) {
  if (k->count[idx]++ == 0) {
    k->first[idx] = now_ms;
    k->unique++;
  }
}

/* One field of a trigger call against the event; a mismatch is listed with both values. */
static bool check_field(struct sim_ledger *l, struct sink *k, const char *id, const char *field,
                        const char *want, const char *got) {
  if (got != NULL && strcmp(want, got) == 0)
    return true;
  char detail[256];
  snprintf(detail, sizeof(detail), "%s: expected '%s', got '%s'", field, want,
           got ? got : "(missing or wrong type)");
  note(l, k, NOTE_MISMATCH, id, detail);
  return false;
}

static bool same_instant(const char *text, int64_t ms) {
  int64_t got;
  return text != NULL && csr_time_parse(text, &got) == 0 && got == ms;
}

static bool check_trigger(struct sim_ledger *l, struct sink *k, long idx, yajl_val body) {
  const struct rec *r = &l->recs[idx];
  char id[ID_MAX], want[CSR_TIME_BUF];
  rec_id(l, r, id, sizeof(id));
  bool ok = check_field(l, k, id, "msdynmkt_amountpaid", co_amount(r),
                        csr_json_num_text(csr_json_get(body, "msdynmkt_amountpaid")));
  ok &= check_field(l, k, id, "msdynmkt_receiptemail", co_email(r),
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
  struct sink *k = &l->sinks[0];
  k->received++;
  const char *binding = csr_json_get_str(body, "msdynmkt_bindingid");
  long idx = binding && binding[0] ? find_binding(l, binding) : -1;
  if (idx < 0) {
    k->unknown++;
    note(l, k, NOTE_UNKNOWN, binding ? binding : "(no msdynmkt_bindingid)", trigger);
    return;
  }
  receive(k, idx, now_ms);
  if (!check_trigger(l, k, idx, body))
    k->mismatched++;
}

/* The webhook body repeats the event: its key fields must be the ones the id was built from. */
static bool check_details(struct sim_ledger *l, struct sink *k, long idx, yajl_val det) {
  const struct rec *r = &l->recs[idx];
  char id[ID_MAX], txn[64], when[CSR_TIME_BUF];
  rec_id(l, r, id, sizeof(id));
  snprintf(txn, sizeof(txn), "%.*s", rec_txn_len(r), r->tail);
  bool ok =
      check_field(l, k, id, "EventType", type_name(r->type), csr_json_get_str(det, "EventType"));
  ok &=
      check_field(l, k, id, "EventTransactionId", txn, csr_json_get_str(det, "EventTransactionId"));
  ok &= check_field(l, k, id, "EventDateTime", rec_time(r, when),
                    csr_json_get_str(det, "EventDateTime"));
  return ok;
}

static void record_webhook(struct sim_ledger *l, struct sink *k, const char *id, yajl_val details,
                           int64_t now_ms) {
  k->received++;
  long idx = find_id(l, id);
  if (idx < 0) {
    k->unknown++;
    note(l, k, NOTE_UNKNOWN, id, NULL);
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
static struct emailc *email_slot(struct sim_ledger *l, struct emails *m, const char *email) {
  char low[256];
  size_t n = 0;
  for (; email[n] && n < sizeof(low) - 1; n++)
    low[n] = (char)(email[n] >= 'A' && email[n] <= 'Z' ? email[n] + 32 : email[n]);
  low[n] = '\0';
  uint32_t h = hash32(low, n);
  for (size_t j = m->tab.mask ? h & m->tab.mask : 0; m->tab.mask && m->tab.s[j].idx;
       j = (j + 1) & m->tab.mask) {
    struct emailc *e = &m->items[m->tab.s[j].idx - 1];
    if (m->tab.s[j].hash == h && strcmp(e->email, low) == 0)
      return e;
  }
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 256;
    struct emailc *items = realloc(m->items, cap * sizeof(*items));
    if (items == NULL)
      return NULL;
    m->items = items;
    m->cap = cap;
  }
  struct emailc *e = &m->items[m->n];
  *e = (struct emailc){.email = arena_put(&l->arena, low, n)};
  if (e->email == NULL || tab_put(&m->tab, h, (uint32_t)m->n) != 0)
    return NULL;
  m->n++;
  return e;
}

void sim_ledger_contact(struct sim_ledger *l, const char *email, const char *contact_id) {
  if (l == NULL)
    return;
  l->contacts_created++;
  struct emailc *e = email_slot(l, &l->contacts, email ? email : "");
  if (e != NULL && ++e->a == 2)
    l->duplicate_emails++;
}

void sim_ledger_customer(struct sim_ledger *l, const char *email, const char *account,
                         bool created) {
  if (l == NULL)
    return;
  l->customers[created ? 0 : 1]++;
  struct emailc *e = email_slot(l, &l->customer_emails, email ? email : "");
  if (e != NULL && created)
    e->a++;
  else if (e != NULL)
    e->b++;
}

void sim_ledger_request(struct sim_ledger *l, const char *endpoint, int status) {
  if (l == NULL || endpoint == NULL)
    return;
  for (unsigned i = 0; i < l->nstats; i++) {
    struct reqstat *s = &l->stats[i];
    if (s->status == status && strcmp(s->endpoint, endpoint) == 0) {
      s->n++;
      return;
    }
  }
  if (l->nstats == STATS)
    return;
  struct reqstat *s = &l->stats[l->nstats++];
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
static struct sink *sink_named(const struct sim_ledger *l, const char *spec) {
  if (strcmp(spec, "trigger") == 0)
    return (struct sink *)&l->sinks[0];
  if (strncmp(spec, "webhook:", 8) != 0)
    return NULL;
  return hook_sink((struct sim_ledger *)l, spec + 8, false);
}

int sim_ledger_sink_counts(const struct sim_ledger *l, const char *sink,
                           struct sim_ledger_sink_counts *out) {
  memset(out, 0, sizeof(*out));
  const struct sink *k = sink_named(l, sink);
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

struct walk {
  /* in */
  const struct sink *k; /* NULL: a receiver that never got anything */
  bool trigger;
  int type;
  int64_t until_ms;
  /* out */
  struct sim_ledger_diff d;
  int64_t *lat;
  uint32_t missing[LIST_CAP], dup[LIST_CAP];
  unsigned nmissing, ndup;
};

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest rank: the smallest latency with at least q of them at or below it. */
static int64_t rank_of(const int64_t *v, size_t n, unsigned q) {
  size_t r = (n * q + 99) / 100;
  return v[r ? r - 1 : 0];
}

static void walk_one(const struct sim_ledger *l, struct walk *w, size_t i) {
  const struct rec *r = &l->recs[i];
  uint32_t c = w->k ? w->k->count[i] : 0;
  if (w->trigger && co_email(r)[0] == '\0') {
    w->d.skipped_no_email++;
    w->d.unexpected += c > 0;
    return;
  }
  w->d.expected++;
  if (c == 0) {
    if (w->nmissing < LIST_CAP)
      w->missing[w->nmissing++] = (uint32_t)i;
    w->d.missing++;
    return;
  }
  w->lat[w->d.delivered++] = w->k->first[i] - r->time_ms;
  if (c > 1) {
    if (w->ndup < LIST_CAP)
      w->dup[w->ndup++] = (uint32_t)i;
    w->d.duplicated++;
  }
}

static int walk(const struct sim_ledger *l, const char *sink, struct walk *w) {
  w->trigger = strcmp(sink, "trigger") == 0;
  if (!w->trigger && (strncmp(sink, "webhook:", 8) != 0 || sink[8] == '\0'))
    return -EINVAL;
  w->k = sink_named(l, sink);
  w->lat = malloc((l->n ? l->n : 1) * sizeof(*w->lat));
  if (w->lat == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < l->n; i++) {
    const struct rec *r = &l->recs[i];
    bool type_ok = (w->type < 0 || r->type == w->type) && (!w->trigger || r->co != NULL);
    if (type_ok && (w->until_ms <= 0 || r->commit_ms < w->until_ms))
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
  struct walk *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return -ENOMEM;
  w->type = type;
  w->until_ms = until_ms;
  int rc = walk(l, sink, w);
  *out = w->d;
  free(w->lat);
  free(w);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* HTTP: /ledger (outside the gate: tests must read it during an outage) and /hooks/{name} */
/* ---------------------------------------------------------------------------------------------- */

static void respond_jw(struct rx_http_request *req, int status, struct csr_jw *jw) {
  const char *body;
  size_t len;
  if (csr_jw_finish(jw, &body, &len) != 0)
    rx_http_respond(req, 500, NULL, "application/json", "{\"error\":\"encoding\"}", 20);
  else
    rx_http_respond(req, status, NULL, "application/json", body, len);
}

static void respond_error(struct rx_http_request *req, int status, const char *msg) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "error", msg);
  csr_jw_obj_end(&jw);
  respond_jw(req, status, &jw);
  csr_jw_free(&jw);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if ((c | 32) >= 'a' && (c | 32) <= 'f')
    return (c | 32) - 'a' + 10;
  return -1;
}

/* The percent-decoded value of `key` in a query string; false when absent or too long. */
static bool query_get(const char *q, const char *key, char *out, size_t len) {
  size_t klen = strlen(key);
  for (const char *p = q; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
    if (strncmp(p, key, klen) != 0 || p[klen] != '=')
      continue;
    size_t n = 0;
    for (p += klen + 1; *p && *p != '&'; p++) {
      if (n + 1 >= len)
        return false;
      if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
        out[n++] = (char)(hexval(p[1]) * 16 + hexval(p[2]));
        p += 2;
      } else {
        out[n++] = *p == '+' ? ' ' : *p;
      }
    }
    out[n] = '\0';
    return true;
  }
  return false;
}

/* A non-negative integer parameter; `def` when absent, -1 when malformed. */
static int64_t query_int(const char *q, const char *key, int64_t def) {
  char v[32], *end;
  if (!query_get(q, key, v, sizeof(v)))
    return def;
  long long n = strtoll(v, &end, 10);
  return v[0] == '\0' || *end != '\0' || n < 0 ? -1 : (int64_t)n;
}

static void write_sink(struct csr_jw *jw, const struct sink *k) {
  csr_jw_obj(jw);
  csr_jw_kint(jw, "received", (int64_t)k->received);
  csr_jw_kint(jw, "unique", (int64_t)k->unique);
  csr_jw_kint(jw, "duplicates", (int64_t)(k->received - k->unknown - k->unique));
  csr_jw_kint(jw, "unknown", (int64_t)k->unknown);
  csr_jw_kint(jw, "mismatched", (int64_t)k->mismatched);
  csr_jw_kint(jw, "rejected", (int64_t)k->rejected);
  csr_jw_obj_end(jw);
}

static void write_generated(struct csr_jw *jw, const struct sim_ledger *l) {
  csr_jw_key(jw, "generated");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "total", (int64_t)l->n);
  csr_jw_kint(jw, "Checkout", (int64_t)l->by_type[1]);
  csr_jw_kint(jw, "AddCartLines", (int64_t)l->by_type[0]);
  csr_jw_kint(jw, "repeated", (int64_t)l->repeated);
  csr_jw_kint(jw, "dropped", (int64_t)l->dropped);
  csr_jw_obj_end(jw);
}

static void write_people(struct csr_jw *jw, const struct sim_ledger *l) {
  csr_jw_key(jw, "contacts");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "created", (int64_t)l->contacts_created);
  csr_jw_kint(jw, "emails", (int64_t)l->contacts.n);
  csr_jw_kint(jw, "duplicate_emails", (int64_t)l->duplicate_emails);
  csr_jw_obj_end(jw);
  csr_jw_key(jw, "customers");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "created", (int64_t)l->customers[0]);
  csr_jw_kint(jw, "updated", (int64_t)l->customers[1]);
  csr_jw_kint(jw, "emails", (int64_t)l->customer_emails.n);
  csr_jw_obj_end(jw);
}

/* {"<endpoint>":{"<status>":N}}, endpoints in first-seen order. */
static void write_requests(struct csr_jw *jw, const struct sim_ledger *l) {
  csr_jw_key(jw, "requests");
  csr_jw_obj(jw);
  for (unsigned i = 0; i < l->nstats; i++) {
    unsigned j = 0;
    while (j < i && strcmp(l->stats[j].endpoint, l->stats[i].endpoint) != 0)
      j++;
    if (j < i)
      continue;
    csr_jw_key(jw, l->stats[i].endpoint);
    csr_jw_obj(jw);
    for (j = i; j < l->nstats; j++) {
      if (strcmp(l->stats[j].endpoint, l->stats[i].endpoint) != 0)
        continue;
      char st[16];
      snprintf(st, sizeof(st), "%d", l->stats[j].status);
      csr_jw_kint(jw, st, (int64_t)l->stats[j].n);
    }
    csr_jw_obj_end(jw);
  }
  csr_jw_obj_end(jw);
}

static void on_ledger(struct rx_http_request *req, void *arg) {
  const struct sim_ledger *l = ((struct sim *)arg)->ledger;
  struct csr_jw jw;
  if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
    return;
  }
  csr_jw_obj(&jw);
  write_generated(&jw, l);
  csr_jw_key(&jw, "trigger");
  write_sink(&jw, &l->sinks[0]);
  csr_jw_key(&jw, "webhook");
  csr_jw_obj(&jw);
  for (unsigned i = 1; i < l->nsinks; i++) {
    csr_jw_key(&jw, l->sinks[i].name);
    write_sink(&jw, &l->sinks[i]);
  }
  csr_jw_obj_end(&jw);
  write_people(&jw, l);
  write_requests(&jw, l);
  csr_jw_obj_end(&jw);
  respond_jw(req, 200, &jw);
  csr_jw_free(&jw);
}

static void write_event(struct csr_jw *jw, const struct sim_ledger *l, size_t i) {
  const struct rec *r = &l->recs[i];
  char id[ID_MAX], when[CSR_TIME_BUF];
  rec_id(l, r, id, sizeof(id));
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", id);
  csr_jw_kstr(jw, "type", type_name(r->type));
  csr_jw_kint(jw, "csu", r->csu);
  csr_jw_kstr(jw, "time", rec_time(r, when));
  csr_time_format(r->commit_ms, when, sizeof(when));
  csr_jw_kstr(jw, "committed", when);
  if (r->co != NULL) {
    csr_jw_kstr(jw, "binding", r->co);
    csr_jw_kbool(jw, "email", co_email(r)[0] != '\0');
    csr_jw_knum_text(jw, "amount", co_amount(r)[0] ? co_amount(r) : "0");
  }
  csr_jw_key(jw, "deliveries");
  csr_jw_obj(jw);
  for (unsigned s = 0; s < l->nsinks; s++)
    csr_jw_kint(jw, s == 0 ? "trigger" : l->sinks[s].name, l->sinks[s].count[i]);
  csr_jw_obj_end(jw);
  csr_jw_obj_end(jw);
}

static void on_events(struct rx_http_request *req, void *arg) {
  const struct sim_ledger *l = ((struct sim *)arg)->ledger;
  int64_t offset = query_int(req->query, "offset", 0);
  int64_t limit = query_int(req->query, "limit", 100);
  if (offset < 0 || limit < 0 || limit > 10000) {
    respond_error(req, 400, "offset and limit are whole numbers, limit at most 10000");
    return;
  }
  struct csr_jw jw;
  if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kint(&jw, "total", (int64_t)l->n);
  csr_jw_kint(&jw, "offset", offset);
  csr_jw_kint(&jw, "limit", limit);
  csr_jw_key(&jw, "events");
  csr_jw_arr(&jw);
  for (size_t i = (size_t)offset; i < l->n && i < (size_t)(offset + limit); i++)
    write_event(&jw, l, i);
  csr_jw_arr_end(&jw);
  csr_jw_obj_end(&jw);
  respond_jw(req, 200, &jw);
  csr_jw_free(&jw);
}

static void write_diff_lists(struct csr_jw *jw, const struct sim_ledger *l, const struct walk *w) {
  char id[ID_MAX];
  csr_jw_key(jw, "missing");
  csr_jw_arr(jw);
  for (unsigned i = 0; i < w->nmissing; i++) {
    rec_id(l, &l->recs[w->missing[i]], id, sizeof(id));
    csr_jw_str(jw, id);
  }
  csr_jw_arr_end(jw);
  csr_jw_key(jw, "duplicated");
  csr_jw_arr(jw);
  for (unsigned i = 0; i < w->ndup; i++) {
    rec_id(l, &l->recs[w->dup[i]], id, sizeof(id));
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "id", id);
    csr_jw_kint(jw, "count", w->k->count[w->dup[i]]);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

/* The sink's unknown keys and field mismatches, whatever the diff's filters. */
static void write_notes(struct csr_jw *jw, const struct sink *k) {
  csr_jw_kint(jw, "unknown", k ? (int64_t)k->unknown : 0);
  csr_jw_key(jw, "unknown_ids");
  csr_jw_arr(jw);
  for (unsigned i = 0; k && i < k->nnotes[NOTE_UNKNOWN]; i++)
    csr_jw_str(jw, k->notes[NOTE_UNKNOWN][i].id);
  csr_jw_arr_end(jw);
  csr_jw_kint(jw, "mismatched", k ? (int64_t)k->mismatched : 0);
  csr_jw_key(jw, "mismatches");
  csr_jw_arr(jw);
  for (unsigned i = 0; k && i < k->nnotes[NOTE_MISMATCH]; i++) {
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "id", k->notes[NOTE_MISMATCH][i].id);
    csr_jw_kstr(jw, "detail", k->notes[NOTE_MISMATCH][i].detail);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

static void write_diff(struct csr_jw *jw, const struct sim_ledger *l, const struct walk *w) {
  csr_jw_obj(jw);
  csr_jw_kint(jw, "expected", (int64_t)w->d.expected);
  csr_jw_kint(jw, "delivered", (int64_t)w->d.delivered);
  csr_jw_kint(jw, "missing_count", (int64_t)w->d.missing);
  csr_jw_kint(jw, "duplicated_count", (int64_t)w->d.duplicated);
  write_diff_lists(jw, l, w);
  csr_jw_kint(jw, "skipped_no_email", (int64_t)w->d.skipped_no_email);
  csr_jw_kint(jw, "unexpected", (int64_t)w->d.unexpected);
  write_notes(jw, w->k);
  csr_jw_key(jw, "latency_ms");
  csr_jw_obj(jw);
  csr_jw_kint(jw, "p50", w->d.p50);
  csr_jw_kint(jw, "p90", w->d.p90);
  csr_jw_kint(jw, "p99", w->d.p99);
  csr_jw_kint(jw, "max", w->d.max);
  csr_jw_obj_end(jw);
  csr_jw_obj_end(jw);
}

/* The walk's filters from ?sink=&type=&until_ms=; a reason when one is malformed. */
static const char *diff_params(const char *q, char *sink, size_t len, struct walk *w) {
  char type[32];
  if (!query_get(q, "sink", sink, len))
    return "sink is required: trigger or webhook:<name>";
  w->type = -1;
  if (query_get(q, "type", type, sizeof(type))) {
    if (strcmp(type, "Checkout") == 0)
      w->type = SIM_CHECKOUT;
    else if (strcmp(type, "AddCartLines") == 0)
      w->type = SIM_ADDCARTLINES;
    else
      return "type is Checkout or AddCartLines";
  }
  w->until_ms = query_int(q, "until_ms", 0);
  return w->until_ms < 0 ? "until_ms is a wall time in epoch milliseconds" : NULL;
}

static void on_diff(struct rx_http_request *req, void *arg) {
  const struct sim_ledger *l = ((struct sim *)arg)->ledger;
  char sink[96];
  struct csr_jw jw;
  struct walk *w = calloc(1, sizeof(*w));
  const char *why = w ? diff_params(req->query, sink, sizeof(sink), w) : "out of memory";
  int rc = why ? -EINVAL : walk(l, sink, w);
  if (why != NULL || rc != 0) {
    respond_error(req, rc == -ENOMEM ? 503 : 400, why ? why : "sink is trigger or webhook:<name>");
  } else if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
  } else {
    write_diff(&jw, l, w);
    respond_jw(req, 200, &jw);
    csr_jw_free(&jw);
  }
  if (w != NULL)
    free(w->lat);
  free(w);
}

static void on_reset(struct rx_http_request *req, void *arg) {
  if (sim_ledger_reset(((struct sim *)arg)->ledger) != 0) {
    respond_error(req, 503, "out of memory");
    return;
  }
  rx_http_respond(req, 200, NULL, "application/json", "{\"ok\":true}", 11);
}

static void hook_error(struct sim_req *r, struct sink *k, int status, const char *msg) {
  struct csr_jw jw;
  if (k != NULL)
    k->rejected++;
  if (csr_jw_init(&jw) != 0) {
    sim_reply(r, 500, NULL, NULL, "{}", 2);
    return;
  }
  csr_jw_obj(&jw);
  csr_jw_kstr(&jw, "error", msg);
  csr_jw_obj_end(&jw);
  sim_reply_jw(r, status, NULL, &jw);
  csr_jw_free(&jw);
}

/* Past the gate: a delivery as SPEC section 4 sends it, keyed by Idempotency-Key = event id. */
static void on_hook(struct sim_req *r) {
  struct sim_ledger *l = r->sim->ledger;
  const char *name = r->http->path + strlen("/hooks/");
  if (name[0] == '\0' || strchr(name, '/') != NULL) {
    hook_error(r, NULL, 404, "POST /hooks/{name}: one path segment names the receiver");
    return;
  }
  struct sink *k = hook_sink(l, name, true);
  if (k == NULL) {
    hook_error(r, NULL, 503, "too many webhook receivers, or the name is too long");
    return;
  }
  const char *key = rx_http_header(r->http, "Idempotency-Key");
  char err[128] = "";
  yajl_val body = csr_json_parse(r->http->body, r->http->body_len, err, sizeof(err));
  const char *eid = csr_json_get_str(body, "EventId");
  yajl_val det = csr_json_get(body, "EventDetails");
  if (key == NULL || key[0] == '\0')
    hook_error(r, k, 400, "the Idempotency-Key header is missing");
  else if (body == NULL)
    hook_error(r, k, 400, "the body is not JSON");
  else if (eid == NULL || strcmp(eid, key) != 0)
    hook_error(r, k, 400, "EventId is missing or differs from Idempotency-Key");
  else if (det == NULL || !YAJL_IS_OBJECT(det))
    hook_error(r, k, 400, "EventDetails is missing or not an object");
  else {
    record_webhook(l, k, key, det, r->received_ms);
    sim_reply(r, 200, NULL, "application/json", "{}", 2);
  }
  csr_json_free(body);
}

static void on_hook_request(struct rx_http_request *req, void *arg) {
  sim_serve(arg, req, "webhook", -1, on_hook, NULL);
}

int sim_ledger_routes(struct sim *sim) {
  struct rx_http_server *srv = &sim->server;
  int rc = rx_http_server_route(srv, "GET", "/ledger", on_ledger, sim);
  if (rc == 0)
    rc = rx_http_server_route(srv, "GET", "/ledger/events", on_events, sim);
  if (rc == 0)
    rc = rx_http_server_route(srv, "GET", "/ledger/diff", on_diff, sim);
  if (rc == 0)
    rc = rx_http_server_route(srv, "POST", "/ledger/reset", on_reset, sim);
  if (rc == 0)
    rc = rx_http_server_route(srv, "POST", "/hooks/*", on_hook_request, sim);
  return rc;
}
