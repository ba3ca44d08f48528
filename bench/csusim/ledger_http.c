/* The ledger over HTTP: GET /ledger (the counts), GET /ledger/events (the records, paged), GET
 * /ledger/diff (generated versus delivered for one sink), GET /ledger/receipts (the same records as
 * the diff, one CSV row each, for bench/run's latency distribution and throughput over time), POST
 * /ledger/reset, and the webhook receiver POST /hooks/{name}. /ledger is outside the gate, so tests
 * can read it during an outage; /hooks/{name} passes the gate like every emulated endpoint
 * ("webhook" in a fault plan).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "ledger_internal.h"
#include "text.h"

/* A non-negative integer parameter; `def` when absent, -1 when malformed. */
static int64_t query_int(const char *q, const char *key, int64_t def) {
  char v[32], *end;
  if (!sim_query_get(q, key, v, sizeof(v)))
    return def;
  long long n = strtoll(v, &end, 10);
  return v[0] == '\0' || *end != '\0' || n < 0 ? -1 : (int64_t)n;
}

static void write_sink(struct csr_jw *jw, const struct sim__sink *k) {
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
  sim_respond_json(req, 200, &jw);
  csr_jw_free(&jw);
}

static void write_event(struct csr_jw *jw, const struct sim_ledger *l, size_t i) {
  const struct sim__rec *r = &l->recs[i];
  char id[SIM_LEDGER_ID_MAX], when[CSR_TIME_BUF];
  sim__rec_id(l, r, id, sizeof(id));
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "id", id);
  csr_jw_kstr(jw, "type", sim__type_name(r->type));
  csr_jw_kint(jw, "csu", r->csu);
  csr_jw_kstr(jw, "time", sim__rec_time(r, when));
  csr_time_format(r->commit_ms, when, sizeof(when));
  csr_jw_kstr(jw, "committed", when);
  if (r->co != NULL) {
    csr_jw_kstr(jw, "binding", r->co);
    csr_jw_kbool(jw, "email", sim__co_email(r)[0] != '\0');
    csr_jw_knum_text(jw, "amount", sim__co_amount(r)[0] ? sim__co_amount(r) : "0");
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
    sim_respond_msg(req, 400, "error", "offset and limit are whole numbers, limit at most 10000");
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
  sim_respond_json(req, 200, &jw);
  csr_jw_free(&jw);
}

static void write_diff_lists(struct csr_jw *jw, const struct sim_ledger *l,
                             const struct sim__walk *w) {
  char id[SIM_LEDGER_ID_MAX];
  csr_jw_key(jw, "missing");
  csr_jw_arr(jw);
  for (unsigned i = 0; i < w->nmissing; i++) {
    sim__rec_id(l, &l->recs[w->missing[i]], id, sizeof(id));
    csr_jw_str(jw, id);
  }
  csr_jw_arr_end(jw);
  csr_jw_key(jw, "duplicated");
  csr_jw_arr(jw);
  for (unsigned i = 0; i < w->ndup; i++) {
    sim__rec_id(l, &l->recs[w->dup[i]], id, sizeof(id));
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "id", id);
    csr_jw_kint(jw, "count", w->k->count[w->dup[i]]);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

/* The sink's unknown keys and field mismatches, whatever the diff's filters. */
static void write_notes(struct csr_jw *jw, const struct sim__sink *k) {
  csr_jw_kint(jw, "unknown", k ? (int64_t)k->unknown : 0);
  csr_jw_key(jw, "unknown_ids");
  csr_jw_arr(jw);
  for (unsigned i = 0; k && i < k->nnotes[SIM_NOTE_UNKNOWN]; i++)
    csr_jw_str(jw, k->notes[SIM_NOTE_UNKNOWN][i].id);
  csr_jw_arr_end(jw);
  csr_jw_kint(jw, "mismatched", k ? (int64_t)k->mismatched : 0);
  csr_jw_key(jw, "mismatches");
  csr_jw_arr(jw);
  for (unsigned i = 0; k && i < k->nnotes[SIM_NOTE_MISMATCH]; i++) {
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "id", k->notes[SIM_NOTE_MISMATCH][i].id);
    csr_jw_kstr(jw, "detail", k->notes[SIM_NOTE_MISMATCH][i].detail);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

static void write_diff(struct csr_jw *jw, const struct sim_ledger *l, const struct sim__walk *w) {
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

/* The walk's filters from ?sink=&type=&from_ms=&until_ms=; a reason when one is malformed. */
static const char *diff_params(const char *q, char *sink, size_t len, struct sim__walk *w) {
  char type[32];
  if (!sim_query_get(q, "sink", sink, len))
    return "sink is required: trigger or webhook:<name>";
  w->type = -1;
  if (sim_query_get(q, "type", type, sizeof(type))) {
    if (strcmp(type, "Checkout") == 0)
      w->type = SIM_CHECKOUT;
    else if (strcmp(type, "AddCartLines") == 0)
      w->type = SIM_ADDCARTLINES;
    else
      return "type is Checkout or AddCartLines";
  }
  w->from_ms = query_int(q, "from_ms", 0);
  w->until_ms = query_int(q, "until_ms", 0);
  return w->from_ms < 0 || w->until_ms < 0
             ? "from_ms and until_ms are wall times in epoch milliseconds"
             : NULL;
}

static void on_diff(struct rx_http_request *req, void *arg) {
  const struct sim_ledger *l = ((struct sim *)arg)->ledger;
  char sink[96];
  struct csr_jw jw;
  struct sim__walk *w = calloc(1, sizeof(*w));
  const char *why = w ? diff_params(req->query, sink, sizeof(sink), w) : "out of memory";
  int rc = why ? -EINVAL : sim__ledger_walk(l, sink, w);
  if (why != NULL || rc != 0) {
    sim_respond_msg(req, rc == -ENOMEM ? 503 : 400, "error",
                    why ? why : "sink is trigger or webhook:<name>");
  } else if (csr_jw_init(&jw) != 0) {
    rx_http_respond(req, 500, NULL, NULL, NULL, 0);
  } else {
    write_diff(&jw, l, w);
    sim_respond_json(req, 200, &jw);
    csr_jw_free(&jw);
  }
  if (w != NULL)
    free(w->lat);
  free(w);
}

/* A growing text buffer for the CSV answer; `err` sticks once an allocation failed. */
struct text {
  char *p;
  size_t len, cap;
  bool err;
};

static bool grow(struct text *t) {
  size_t cap = t->cap ? t->cap * 2 : 1 << 16;
  char *p = realloc(t->p, cap);
  if (p == NULL) {
    t->err = true;
    return false;
  }
  t->p = p;
  t->cap = cap;
  return true;
}

static void text_row(const struct sim_ledger *l, struct text *t, const struct sim__rec *r,
                     const struct sim__sink *k, size_t i) {
  if (t->err || (t->cap - t->len < 128 + SIM_LEDGER_ID_MAX && !grow(t)))
    return;
  char id[SIM_LEDGER_ID_MAX];
  sim__rec_id(l, r, id, sizeof(id));
  int64_t first = k && k->count[i] ? k->first[i] : 0;
  unsigned count = k ? k->count[i] : 0;
  t->len +=
      (size_t)snprintf(t->p + t->len, t->cap - t->len, "%lld,%lld,%lld,%u,%s\n",
                       (long long)r->time_ms, (long long)r->commit_ms, (long long)first, count, id);
}

/* The records the diff with the same filters expects (for the trigger: Checkouts with an email),
 * one row each: "event_ms,commit_ms,first_ms,count,id" (first_ms 0 while undelivered). A receiver
 * that never got anything lists every event with count 0. Event ids hold no commas. */
static void on_receipts(struct rx_http_request *req, void *arg) {
  const struct sim_ledger *l = ((struct sim *)arg)->ledger;
  char sink[96];
  struct sim__walk w;
  memset(&w, 0, sizeof(w));
  const char *why = diff_params(req->query, sink, sizeof(sink), &w);
  w.trigger = why == NULL && strcmp(sink, "trigger") == 0;
  if (why == NULL && !w.trigger && (strncmp(sink, "webhook:", 8) != 0 || sink[8] == '\0'))
    why = "sink is trigger or webhook:<name>";
  if (why != NULL) {
    sim_respond_msg(req, 400, "error", why);
    return;
  }
  const struct sim__sink *k =
      w.trigger ? &l->sinks[0] : sim__hook_sink((struct sim_ledger *)l, sink + 8, false);
  struct text t = {0};
  static const char head[] = "event_ms,commit_ms,first_ms,count,id\n";
  if (grow(&t)) {
    memcpy(t.p, head, sizeof(head) - 1);
    t.len = sizeof(head) - 1;
  }
  for (size_t i = 0; i < l->n; i++) {
    const struct sim__rec *r = &l->recs[i];
    bool type_ok = (w.type < 0 || r->type == w.type) && (!w.trigger || r->co != NULL);
    bool expected = !w.trigger || sim__co_email(r)[0] != '\0';
    if (type_ok && expected && r->commit_ms >= w.from_ms &&
        (w.until_ms <= 0 || r->commit_ms < w.until_ms))
      text_row(l, &t, r, k, i);
  }
  if (t.err)
    sim_respond_msg(req, 503, "error", "out of memory");
  else
    rx_http_respond(req, 200, NULL, "text/csv", t.p, t.len);
  free(t.p);
}

static void on_reset(struct rx_http_request *req, void *arg) {
  if (sim_ledger_reset(((struct sim *)arg)->ledger) != 0) {
    sim_respond_msg(req, 503, "error", "out of memory");
    return;
  }
  rx_http_respond(req, 200, NULL, "application/json", "{\"ok\":true}", 11);
}

static void hook_error(struct sim_req *r, struct sim__sink *k, int status, const char *msg) {
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

static bool hook_reads(void *arg, const char *key, size_t len) {
  (void)arg;
  static const char *const keys[] = {"EventId", "EventDetails"};
  return csr_json_key_in(key, len, keys, sizeof(keys) / sizeof(keys[0]));
}

/* Past the gate: a delivery as SPEC section 4 sends it, keyed by Idempotency-Key = event id. */
static void on_hook(struct sim_req *r) {
  struct sim_ledger *l = r->sim->ledger;
  const char *name = r->http->path + strlen("/hooks/");
  if (name[0] == '\0' || strchr(name, '/') != NULL) {
    hook_error(r, NULL, 404, "POST /hooks/{name}: one path segment names the receiver");
    return;
  }
  struct sim__sink *k = sim__hook_sink(l, name, true);
  if (k == NULL) {
    hook_error(r, NULL, 503, "too many webhook receivers, or the name is too long");
    return;
  }
  const char *key = rx_http_header(r->http, "Idempotency-Key");
  char err[128] = "";
  /* The whole body is checked as JSON (a scan without callbacks), but only these two become a
   * tree, from a scan that stops once it has them: the order after them is ~15 KB, and a tree of
   * all of it for every delivery was a quarter of the emulator's time at 5,000 ev/s, time the
   * relay's other requests waited for in the same queue. */
  yajl_val body = NULL;
  if (csr_json_check_object(r->http->body, r->http->body_len, err, sizeof(err)) == 0)
    body = csr_json_parse_checked_members(r->http->body, r->http->body_len, hook_reads, NULL, 2,
                                          err, sizeof(err));
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
    sim__record_webhook(l, k, key, det, r->received_ms);
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
    rc = rx_http_server_route(srv, "GET", "/ledger/receipts", on_receipts, sim);
  if (rc == 0)
    rc = rx_http_server_route(srv, "POST", "/ledger/reset", on_reset, sim);
  if (rc == 0)
    rc = rx_http_server_route(srv, "POST", "/hooks/*", on_hook_request, sim);
  return rc;
}
