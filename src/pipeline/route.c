/* The route stage (SPEC §3; the design is in pipeline.h, "Route stage"): a live event is enriched
 * by its CSU's enrichment scheduler, then each delivery of its route goes to its sink's scheduler,
 * and every decision becomes an ATTEMPT or OUTCOME record, appended then applied.
 *
 * One `struct rev` exists per event the stage works on, found from the state's entry (_route). It
 * holds the parsed row, the fetched documents, the enrichment item and one item per delivery. It
 * is freed once nothing of it is submitted anywhere: its deliveries are then final, dead letters,
 * or (at close) cancelled, and the store has what the next start needs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "csurelay/metrics.h"
#include "route_internal.h"

/* ---------------------------------------------------------------------------------------------- */
/* Records                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

/* Appends then applies what r->jw holds; a failure stops admission (memory and log disagree). */
/* Appends what r->jw holds as a `type` record, then applies it: from `d`'s fields when the record
 * is an ATTEMPT or OUTCOME (no parsing back what was just written), else from its text. */
static int commit(struct pl_route *r, uint8_t type, const char *id,
                  const struct pl_rec_delivery *d) {
  const char *text;
  size_t len;
  int rc = csr_jw_finish(&r->jw, &text, &len);
  if (rc == 0)
    rc = pl_store_append(pl_admit_store(r->admit), type, text, len, NULL, NULL);
  if (rc == 0 && (rc = d ? pl_state_deliver(r->state, type, d)
                         : pl_state_apply(r->state, type, text, len)) < 0)
    CSR_LOG(CSR_ERROR, "route: a record did not apply after its append",
            CSR_KS("record", pl_rec_name(type)), CSR_KS("event_id", id),
            CSR_KS("reason", pl_state_error(r->state)));
  csr_jw_reset(&r->jw);
  if (rc < 0) {
    r->failed = rc;
    pl_admit_fail(r->admit, rc, pl_rec_name(type), id);
  }
  return rc;
}

static int record_outcome(struct pl_route *r, const char *id, const char *sink,
                          enum sk_outcome outcome, unsigned attempts, int status,
                          const char *reason, const char *excerpt) {
  struct pl_rec_delivery d = {.id = id,
                              .sink = sink,
                              .outcome = outcome,
                              .attempt = attempts,
                              .at_ms = rx_wall_ms(),
                              .status = status,
                              .reason = reason && *reason ? reason : NULL,
                              .excerpt = excerpt && *excerpt ? excerpt : NULL};
  int rc = pl_rec_outcome(&r->jw, &d);
  if (rc < 0) {
    csr_jw_reset(&r->jw);
    return rc;
  }
  r->st.outcomes++;
  return commit(r, PL_REC_OUTCOME, id, &d);
}

static int record_attempt(struct pl_route *r, const struct pl_sched_item *it, const char *sink) {
  struct pl_rec_delivery d = {.id = it->event->id,
                              .sink = sink,
                              .attempt = it->attempt,
                              .next_ms = it->next_wall_ms,
                              .status = it->d->status,
                              .reason = it->d->reason[0] ? it->d->reason : NULL,
                              .excerpt = it->d->excerpt[0] ? it->d->excerpt : NULL};
  int rc = pl_rec_attempt(&r->jw, &d);
  if (rc < 0) {
    csr_jw_reset(&r->jw);
    return rc;
  }
  r->st.attempts++;
  return commit(r, PL_REC_ATTEMPT, d.id, &d);
}

/* ---------------------------------------------------------------------------------------------- */
/* Events in the stage                                                                            */
/* ---------------------------------------------------------------------------------------------- */

const struct pl_state_event *pl__route_live(const struct rev *v) {
  const struct pl_state_event *ev = pl_state_event(v->r->state, v->id);
  return ev != NULL && !ev->finished ? ev : NULL;
}

static bool in_work(enum pl_dstate st) {
  return st == PL_DS_PENDING || st == PL_DS_WAITING;
}

/* Frees the event once nothing of it is submitted; room may have freed up for the poll stage. */
void pl__route_release(struct rev *v) {
  struct pl_route *r = v->r;
  if (v->outstanding > 0)
    return;
  if (v->prev)
    v->prev->next = v->next;
  else
    r->revs = v->next;
  if (v->next)
    v->next->prev = v->prev;
  r->st.events--;
  const struct pl_state_event *ev = pl__route_live(v);
  if (ev != NULL)
    ((struct pl_state_event *)ev)->_route = NULL; /* the stage's slot in the entry */
  free(v->id);
  pl_fetch_release(&v->order);
  pl_fetch_release(&v->customer);
  free(v);
  if (r->poll != NULL && !r->closing && pl_admit_has_room(r->admit))
    pl_poll_resume(r->poll);
  pl__route_check_drain(r);
}

static struct rsink *find_sink(struct pl_route *r, const char *name) {
  for (size_t i = 0; i < r->n_sinks; i++)
    if (strcmp(r->sinks[i].conf->name, name) == 0)
      return &r->sinks[i];
  return NULL;
}

static const struct csr_route *find_route(const struct pl_route *r, const char *type) {
  for (size_t i = 0; i < r->cfg->n_routes; i++)
    if (strcmp(r->cfg->routes[i].event_type, type) == 0)
      return &r->cfg->routes[i];
  return NULL;
}

static const struct csr_delivery_conf *find_deliver(const struct csr_route *route,
                                                    const char *sink) {
  for (size_t i = 0; route != NULL && i < route->n_deliver; i++)
    if (strcmp(route->deliver[i].sink_name, sink) == 0)
      return &route->deliver[i];
  return NULL;
}

static struct rcsu *find_csu(struct pl_route *r, const char *name) {
  for (size_t i = 0; i < r->n_csus; i++)
    if (strcmp(r->csus[i].csu->name, name) == 0)
      return &r->csus[i];
  return NULL;
}

static void on_deliver_final(void *arg, struct pl_sched_item *it);
static void on_deliver_attempt(void *arg, struct pl_sched_item *it);
static void on_deliver_cancelled(void *arg, struct pl_sched_item *it);

/* What there is to fetch: the route's documents, less a guest's customer and a missing cart. */
static void rev_plan_enrichment(struct rev *v) {
  unsigned want = v->route ? v->route->enrich : 0;
  v->order_done = !(want & CSR_ENRICH_ORDER) || v->cart_id == NULL || *v->cart_id == '\0';
  v->customer_done =
      !(want & CSR_ENRICH_CUSTOMER) || v->customer_id == NULL || *v->customer_id == '\0';
}

/* The sk_event view of the row; the row's EventDateTime text is what sinks send as the time. The
 * event goes as text: a sink that reads its fields builds its own tree (sk_event_trees). */
static void rev_view(struct rev *v) {
  v->ske = (struct sk_event){.id = v->id,
                             .csu = v->csu,
                             .type = v->type,
                             .time_ms = v->time_ms,
                             .time_text = v->time_text,
                             .event_json = v->row_json,
                             .event_json_len = strlen(v->row_json)};
}

/* The row's members the stage itself reads, as strings: a scan of the row and three short copies
 * rather than a tree (a take is on the path of every event, at every second's burst). */
static const char *const ROW_KEYS[] = {"EventTransactionId", "EventCustomerId", "EventDateTime"};
#define N_ROW_KEYS (sizeof(ROW_KEYS) / sizeof(ROW_KEYS[0]))

/* Reads ev's row's ROW_KEYS into r->scratch, vals pointing there: the bytes used, or < 0. */
static int read_row_keys(struct pl_route *r, const struct pl_state_event *ev,
                         const char *vals[N_ROW_KEYS]) {
  size_t need = ev->row_len + N_ROW_KEYS;
  if (need > r->scratch_cap) {
    char *grown = realloc(r->scratch, need);
    if (grown == NULL)
      return UV_ENOMEM;
    r->scratch = grown;
    r->scratch_cap = need;
  }
  return csr_json_top_strings(ev->row, ev->row_len, ROW_KEYS, N_ROW_KEYS, r->scratch,
                              r->scratch_cap, vals, NULL, 0);
}

/* Where value `s` (in r->scratch, or NULL) lands in `to`, the copy of the scratch. */
static const char *moved(const struct pl_route *r, const char *s, char *to) {
  return s != NULL ? to + (s - r->scratch) : NULL;
}

static struct rev *rev_new(struct pl_route *r, const struct pl_state_event *ev) {
  const char *vals[N_ROW_KEYS];
  int used = read_row_keys(r, ev, vals);
  if (used < 0)
    return NULL; /* the state re-encoded the row itself: this is memory, not input */
  /* The row's text and the members' texts ride after the items: the state's own copy may move at
   * its next apply. */
  size_t items = ev->n_sinks * sizeof(struct ritem);
  struct rev *v = calloc(1, sizeof(*v) + items + ev->row_len + 1 + (size_t)used);
  if (v == NULL)
    return NULL;
  v->row_json = (char *)v->items + items;
  memcpy(v->row_json, ev->row, ev->row_len);
  char *texts = v->row_json + ev->row_len + 1;
  memcpy(texts, r->scratch, (size_t)used);
  v->cart_id = moved(r, vals[0], texts);
  v->customer_id = moved(r, vals[1], texts);
  v->time_text = moved(r, vals[2], texts);
  v->id = strdup(ev->id);
  if (v->id == NULL) {
    free(v);
    return NULL;
  }
  v->r = r;
  v->csu = ev->csu;
  v->type = ev->type;
  v->time_ms = ev->time_ms;
  v->n = ev->n_sinks;
  v->route = find_route(r, ev->type);
  v->enricher = find_csu(r, ev->csu);
  rev_view(v);
  rev_plan_enrichment(v);
  v->order.data = v->customer.data = v;
  for (size_t i = 0; i < v->n; i++) {
    struct ritem *ri = &v->items[i];
    ri->v = v;
    ri->sink_name = ev->sinks[i].sink; /* interned by the state: stable after the event ends */
    ri->rs = find_sink(r, ri->sink_name);
    ri->conf = find_deliver(v->route, ri->sink_name);
    ri->it.data = ri;
    ri->it.event = &v->ske;
    ri->it.conf = ri->conf;
    ri->it.delivery_data = v;
  }
  v->next = r->revs;
  if (r->revs)
    r->revs->prev = v;
  r->revs = v;
  r->st.events++;
  ((struct pl_state_event *)ev)->_route = v; /* the stage's slot in the entry */
  return v;
}

/* Every open delivery of the event still in work becomes a dead letter (enrichment failed). */
static void rev_dead_letter_all(struct rev *v, const char *reason, int status,
                                const char *excerpt) {
  const struct pl_state_event *ev;
  for (size_t i = 0; i < v->n && (ev = pl__route_live(v)) != NULL; i++) {
    const struct pl_state_delivery *d = &ev->sinks[i];
    if (!in_work(d->state) || v->items[i].submitted)
      continue;
    unsigned attempts = d->attempt > 1 ? d->attempt - 1 : 0;
    if (record_outcome(v->r, v->id, v->items[i].sink_name, SK_DEAD, attempts, status, reason,
                       excerpt) < 0)
      return;
  }
}

/* A delivery that cannot be attempted under the current config is a dead letter, not a wait. */
static int submit_delivery(struct rev *v, const struct pl_state_event *ev, size_t i) {
  struct ritem *ri = &v->items[i];
  const struct pl_state_delivery *d = &ev->sinks[i];
  if (ri->rs == NULL || ri->conf == NULL) {
    v->r->st.unroutable++;
    return record_outcome(v->r, v->id, ri->sink_name, SK_DEAD, 0, 0,
                          ri->rs == NULL ? "no_sink" : "no_route",
                          "the configuration no longer routes this event to this sink");
  }
  int rc = d->state == PL_DS_WAITING || d->attempt > 1
               ? pl_sched_submit_at(ri->rs->sched, &ri->it, d->attempt, d->next_ms)
               : pl_sched_submit(ri->rs->sched, &ri->it);
  if (rc < 0)
    return rc;
  ri->submitted = true;
  v->outstanding++;
  return 0;
}

static bool needs_enrichment(const struct rev *v) {
  return !v->order_done || !v->customer_done;
}

/* The enrichment's scheduler item lives only while it is submitted: a live event mostly waits for
 * its deliveries. It holds the event
 * (outstanding) until pl__route_end_enrichment. */
static void submit_enrichment(struct rev *v) {
  struct pl_sched_item *it = calloc(1, sizeof(*it));
  if (it == NULL)
    return; /* the next kick tries again */
  it->data = it->delivery_data = v;
  it->event = &v->ske;
  v->enrich = it;
  v->outstanding++;
  v->r->st.enriching++;
  if (pl_sched_submit(v->enricher->sched, it) < 0)
    pl__route_end_enrichment(v);
}

void pl__route_end_enrichment(struct rev *v) {
  free(v->enrich);
  v->enrich = NULL;
  v->r->st.enriching--;
  v->outstanding--;
}

/* Moves the event on: enrichment first, then every delivery in work that is not submitted. */
static void rev_kick(struct rev *v) {
  struct pl_route *r = v->r;
  if (r->closing || r->failed)
    return;
  if (!v->enriched && !needs_enrichment(v))
    v->enriched = true;
  if (!v->enriched) {
    if (v->enrich != NULL)
      return;
    if (v->enricher == NULL)
      rev_dead_letter_all(v, "no_csu", 0, "the configuration no longer has this event's CSU");
    else
      submit_enrichment(v);
    return;
  }
  const struct pl_state_event *ev;
  for (size_t i = 0; i < v->n && (ev = pl__route_live(v)) != NULL; i++)
    if (in_work(ev->sinks[i].state) && !v->items[i].submitted && submit_delivery(v, ev, i) < 0)
      break;
}

/* Starts work on live event `ev` (new, replayed, or with dead letters replayed). */
static void take(struct pl_route *r, const struct pl_state_event *ev) {
  if (ev == NULL || ev->finished || r->closing)
    return;
  struct rev *v = ev->_route;
  if (v == NULL) {
    bool work = false;
    for (size_t i = 0; i < ev->n_sinks; i++)
      work = work || in_work(ev->sinks[i].state);
    if (!work)
      return; /* parked: only dead letters */
    v = rev_new(r, ev);
    if (v == NULL) {
      CSR_LOG(CSR_ERROR, "route: out of memory; the event waits for the next start",
              CSR_KS("event_id", ev->id));
      return;
    }
  }
  v->outstanding++; /* hold it while kicking: records may finish the event */
  rev_kick(v);
  v->outstanding--;
  pl__route_release(v);
}

static void observe_since(struct csr_series *s, int64_t event_ms) {
  if (s != NULL)
    csr_series_observe(s, (double)(rx_wall_ms() - event_ms) / 1000.0);
}

void pl_route_on_admitted(void *arg, const char *id) {
  struct pl_route *r = arg;
  const struct pl_state_event *ev = pl_state_event(r->state, id);
  if (ev != NULL)
    observe_since(r->durable_latency, ev->time_ms);
  take(r, ev);
}

void pl_route_resume(struct pl_route *r) {
  /* take() may finish events (unroutable ones), which unlinks them: find the next one first. */
  const struct pl_state_event *ev = pl_state_live_next(r->state, NULL);
  while (ev != NULL) {
    const struct pl_state_event *next = pl_state_live_next(r->state, ev);
    take(r, ev);
    ev = next;
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Enrichment results                                                                             */
/* ---------------------------------------------------------------------------------------------- */

void pl__route_enriched(struct rev *v, const struct pl_sched_item *it) {
  struct pl_route *r = v->r;
  if (it->outcome == SK_DELIVERED) {
    v->enriched = true;
    r->st.enriched++;
    observe_since(r->enriched_latency, v->time_ms);
    rev_kick(v);
  } else if (it->outcome == SK_DEAD) {
    char reason[96];
    snprintf(reason, sizeof(reason), "enrich: %s", it->d->reason);
    r->st.enrich_dead++;
    CSR_LOG(CSR_WARN, "route: enrichment failed for good; the event's deliveries are dead letters",
            CSR_KS("event_id", v->id), CSR_KS("reason", reason), CSR_KI("status", it->d->status));
    rev_dead_letter_all(v, reason, it->d->status, it->d->excerpt);
  }
  pl__route_end_enrichment(v); /* frees `it`; its hold on v kept it alive until here */
  pl__route_release(v);
}

/* ---------------------------------------------------------------------------------------------- */
/* Delivery results                                                                               */
/* ---------------------------------------------------------------------------------------------- */

static void on_deliver_final(void *arg, struct pl_sched_item *it) {
  (void)arg;
  struct ritem *ri = it->data;
  struct rev *v = ri->v;
  ri->submitted = false;
  if (it->outcome == SK_DELIVERED)
    observe_since(ri->rs->latency, v->time_ms);
  if (it->outcome == SK_DEAD)
    CSR_LOG(CSR_WARN, "route: delivery dead-lettered", CSR_KS("event_id", v->id),
            CSR_KS("sink", ri->sink_name), CSR_KS("reason", it->d->reason),
            CSR_KI("status", it->d->status), CSR_KI("attempts", it->attempt));
  (void)record_outcome(v->r, v->id, ri->sink_name, it->outcome, it->attempt, it->d->status,
                       it->d->reason, it->d->excerpt);
  v->outstanding--;
  pl__route_release(v);
}

static void on_deliver_attempt(void *arg, struct pl_sched_item *it) {
  (void)arg;
  struct ritem *ri = it->data;
  (void)record_attempt(ri->v->r, it, ri->sink_name);
}

static void on_deliver_cancelled(void *arg, struct pl_sched_item *it) {
  (void)arg;
  struct ritem *ri = it->data;
  ri->submitted = false;
  ri->v->outstanding--;
  pl__route_release(ri->v);
}

/* ---------------------------------------------------------------------------------------------- */
/* Dead letters                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

static bool matches(const struct pl_state_delivery *d, const char *id, const char *sink) {
  return (id == NULL || strcmp(d->event->id, id) == 0) &&
         (sink == NULL || strcmp(d->sink, sink) == 0);
}

/** A dead letter picked for replay or deletion: copied, since applying a record may free the
 * event (the sink name is interned by the state and outlives it). */
struct dlq_pick {
  char *id;
  const char *sink;
};

static void picks_free(struct dlq_pick *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(p[i].id);
  free(p);
}

/* Collects the matching dead letters first: applying a record changes the queue under us. */
static int dlq_select(struct pl_route *r, const char *id, const char *sink, struct dlq_pick **out,
                      size_t *n) {
  size_t cap = 0;
  *out = NULL;
  *n = 0;
  for (const struct pl_state_delivery *d = pl_state_dlq_next(r->state, NULL); d != NULL;
       d = pl_state_dlq_next(r->state, d)) {
    if (!matches(d, id, sink))
      continue;
    if (*n == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct dlq_pick *grown = realloc(*out, ncap * sizeof(*grown));
      if (grown == NULL) {
        picks_free(*out, *n);
        return UV_ENOMEM;
      }
      *out = grown;
      cap = ncap;
    }
    struct dlq_pick *p = &(*out)[*n];
    p->sink = d->sink;
    if ((p->id = strdup(d->event->id)) == NULL) {
      picks_free(*out, *n);
      return UV_ENOMEM;
    }
    (*n)++;
  }
  return *n ? 0 : UV_ENOENT;
}

static int dlq_apply(struct pl_route *r, bool replay, const char *id, const char *sink,
                     size_t *count) {
  if (count)
    *count = 0;
  if (r->closing)
    return UV_ECANCELED;
  struct dlq_pick *sel;
  size_t n;
  int rc = dlq_select(r, id, sink, &sel, &n);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n && rc == 0; i++) {
    rc = replay ? pl_rec_dlq_replay(&r->jw, sel[i].id, sel[i].sink, rx_wall_ms())
                : pl_rec_dlq_delete(&r->jw, sel[i].id, sel[i].sink);
    if (rc == 0)
      rc = commit(r, replay ? PL_REC_DLQ_REPLAY : PL_REC_DLQ_DELETE, sel[i].id, NULL);
    else
      csr_jw_reset(&r->jw);
    if (rc == 0) {
      if (count)
        (*count)++;
      replay ? r->st.replayed++ : r->st.deleted++;
      if (replay)
        take(r, pl_state_event(r->state, sel[i].id));
    }
  }
  picks_free(sel, n);
  return rc;
}

int pl_route_dlq_replay(struct pl_route *r, const char *id, const char *sink, size_t *count) {
  return dlq_apply(r, true, id, sink, count);
}

int pl_route_dlq_delete(struct pl_route *r, const char *id, const char *sink, size_t *count) {
  int rc = dlq_apply(r, false, id, sink, count);
  if (rc == 0 && r->poll != NULL && pl_admit_has_room(r->admit))
    pl_poll_resume(r->poll);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Create                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* Finer around one poll interval (the default 1 s): an event's wait for its window ends there, and
 * the latency target (poll interval + 100 ms) sits there too. */
static const double latency_bounds[] = {0.05, 0.1, 0.25, 0.5, 0.75, 1,  1.1, 1.25,
                                        1.5,  2,   2.5,  5,   10,   30, 60,  300};

static struct csr_family *latency_family(struct pl_route *r, const char *name, const char *help) {
  if (r->metrics == NULL)
    return NULL;
  return csr_metrics_family(r->metrics, name, help, CSR_HISTOGRAM, latency_bounds,
                            sizeof(latency_bounds) / sizeof(latency_bounds[0]));
}

static void stages_create(struct pl_route *r) {
  struct csr_family *fam = latency_family(r, "csurelay_stage_latency_seconds",
                                          "From EventDateTime to the stage: durable (admitted into "
                                          "the AOF) or enriched (routes with enrich).");
  if (fam == NULL)
    return;
  r->durable_latency = csr_metrics_series(fam, "stage", "durable", NULL);
  r->enriched_latency = csr_metrics_series(fam, "stage", "enriched", NULL);
}

static int sinks_create(struct pl_route *r, struct sk_sink *const *sinks, uint64_t seed) {
  static const struct pl_sched_ops ops = {.on_final = on_deliver_final,
                                          .on_attempt = on_deliver_attempt,
                                          .on_cancelled = on_deliver_cancelled};
  struct pl_sched_opts so = {.base_ms = r->cfg->retry.base_ms,
                             .cap_ms = r->cfg->retry.cap_ms,
                             .max_attempts = r->cfg->retry.max_attempts};
  struct csr_family *fam = latency_family(r, "csurelay_delivery_latency_seconds",
                                          "From EventDateTime to the sink's acknowledgement.");
  for (size_t i = 0; i < r->n_sinks; i++) {
    struct rsink *rs = &r->sinks[i];
    rs->conf = &r->cfg->sinks[i];
    rs->sink = sinks[i];
    rs->latency = fam ? csr_metrics_series(fam, "sink", rs->conf->name, NULL) : NULL;
    so.seed = seed ? seed + i : 0;
    int rc = pl_sched_create(r->loop, rs->sink, &so, &ops, r, &rs->sched);
    if (rc < 0)
      return rc;
  }
  return 0;
}

int pl_route_create(struct rx_loop *loop, const struct csr_config *cfg, struct pl_admit *admit,
                    struct pl_enrich *enrich, struct sk_sink *const *sinks,
                    const struct pl_route_opts *opts, struct pl_route **out) {
  if (out)
    *out = NULL;
  if (loop == NULL || cfg == NULL || admit == NULL || out == NULL ||
      (enrich == NULL && cfg->n_csus > 0) || (cfg->n_sinks > 0 && sinks == NULL))
    return UV_EINVAL;
  for (size_t i = 0; i < cfg->n_sinks; i++)
    if (sinks[i] == NULL)
      return UV_EINVAL;
  struct pl_route *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return UV_ENOMEM;
  r->loop = loop;
  r->cfg = cfg;
  r->admit = admit;
  r->state = pl_admit_state(admit);
  r->enrich = enrich;
  r->metrics = opts ? opts->metrics : NULL;
  r->enrich_tries = opts && opts->enrich_tries ? opts->enrich_tries : 3;
  uint64_t seed = opts ? opts->seed : 0;
  r->n_sinks = cfg->n_sinks;
  r->n_csus = cfg->n_csus;
  r->sinks = calloc(r->n_sinks ? r->n_sinks : 1, sizeof(*r->sinks));
  r->csus = calloc(r->n_csus ? r->n_csus : 1, sizeof(*r->csus));
  int rc = r->sinks && r->csus ? csr_jw_init(&r->jw) : UV_ENOMEM;
  if (rc == 0)
    r->jw_ok = true;
  if (rc == 0) {
    stages_create(r);
    rc = sinks_create(r, sinks, seed);
  }
  if (rc == 0)
    rc = pl__route_enrich_create(r, seed);
  if (rc == 0)
    rc = rx_timer_init(&r->drain_timer, loop);
  if (rc < 0) {
    pl__route_free_partial(r);
    return rc;
  }
  r->drain_timer.data = r;
  r->timer_open = true;
  *out = r;
  return 0;
}

void pl_route_set_poll(struct pl_route *r, struct pl_poll *poll) {
  r->poll = poll;
}

/* ---------------------------------------------------------------------------------------------- */
/* Stats                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

void pl_route_stats(const struct pl_route *r, struct pl_route_stats *out) {
  *out = r->st;
}

int pl_route_sink_stats(const struct pl_route *r, size_t i, struct pl_route_sink_stats *out) {
  if (i >= r->n_sinks)
    return UV_EINVAL;
  const struct rsink *rs = &r->sinks[i];
  memset(out, 0, sizeof(*out));
  out->name = rs->conf->name;
  out->sink = rs->sink;
  pl_sched_stats(rs->sched, &out->sched);
  if (rs->sink->ops->ready &&
      rs->sink->ops->ready(rs->sink, out->ready_reason, sizeof(out->ready_reason)) == 0)
    out->ready_reason[0] = '\0';
  return 0;
}
