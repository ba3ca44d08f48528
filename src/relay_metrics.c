/* The relay's numbers: Prometheus series for /metrics (SPEC §6: per CSU and per sink counters,
 * in-flight and queue gauges, cursor lag, AOF bytes and fsync latency; the latency histograms,
 * per sink and per stage, are the route stage's) and the JSON of GET /v1/status.
 *
 * The stages keep plain counters; the series are looked up once at open and refreshed from them
 * before each render. A relay lives from one reload to the next, so a counter series remembers its
 * value at open (`base`) and continues from it: Prometheus never sees a reload as a reset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "heap.h"
#include "relay_internal.h"

#define MAX_SINK_EXTRA 16

struct ctr {
  struct csr_series *s;
  double base;
};

struct lane_m {
  struct ctr polled, searches, errors;
  struct csr_series *lag;
};

struct csu_m {
  struct ctr admitted, duplicates, enrich_requests;
  struct csr_series *enrich_in_flight, *enrich_queued, *enrich_window;
};

struct sink_m {
  struct ctr delivered, skipped, retried, dead;
  struct csr_series *in_flight, *queued, *waiting, *up;
  struct ctr extra[MAX_SINK_EXTRA]; /* sk_ops.metrics; gauges ignore base */
  size_t n_extra;
};

struct relay_metrics {
  size_t n_lanes;
  struct lane_m *lanes;
  struct csu_m *csus;
  struct sink_m *sinks;
  struct csr_series *live, *parked, *dead_letters, *dedupe_ids, *state_bytes, *heap_bytes,
      *resident_bytes, *aof_bytes, *aof_healthy, *fsync_last, *fsync_max, *cache_entries,
      *cache_bytes;
  struct ctr fsyncs, fsync_seconds, torn_tails, compactions, cache_hits, cache_misses, coalesced;
};

/* ---------------------------------------------------------------------------------------------- */
/* Registration                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

static struct csr_family *fam(struct csr_relay *r, const char *name, const char *help,
                              int counter) {
  return csr_metrics_family(r->metrics, name, help, counter ? CSR_COUNTER : CSR_GAUGE, NULL, 0);
}

static struct ctr ctr_of(struct csr_series *s) {
  return (struct ctr){.s = s, .base = s ? s->value : 0};
}

static void ctr_set(struct ctr *c, uint64_t v) {
  if (c->s)
    c->s->value = c->base + (double)v;
}

static void gauge_set(struct csr_series *s, double v) {
  if (s)
    s->value = v;
}

/* Series by label set; a family that failed to allocate gives NULL (the value is then dropped). */
static struct csr_series *s0(struct csr_family *f) {
  return f ? csr_metrics_series(f, NULL) : NULL;
}
static struct csr_series *s1(struct csr_family *f, const char *k, const char *v) {
  return f ? csr_metrics_series(f, k, v, NULL) : NULL;
}
static struct csr_series *s2(struct csr_family *f, const char *k1, const char *v1, const char *k2,
                             const char *v2) {
  return f ? csr_metrics_series(f, k1, v1, k2, v2, NULL) : NULL;
}

static void open_lanes(struct csr_relay *r, struct relay_metrics *m) {
  struct csr_family *polled = fam(r, "csurelay_polled_events_total",
                                  "Rows read by Search (repeats of the overlap included).", 1);
  struct csr_family *searches = fam(r, "csurelay_searches_total", "Search requests.", 1);
  struct csr_family *errors = fam(r, "csurelay_search_errors_total", "Failed Searches.", 1);
  struct csr_family *lag =
      fam(r, "csurelay_cursor_lag_seconds", "Wall clock minus the cursor of (csu, type).", 0);
  for (size_t i = 0; i < m->n_lanes; i++) {
    struct pl_poll_stats ps;
    if (pl_poll_stats(r->poll, i, &ps) < 0)
      continue;
    struct lane_m *l = &m->lanes[i];
    l->polled = ctr_of(s2(polled, "csu", ps.csu, "type", ps.type));
    l->searches = ctr_of(s2(searches, "csu", ps.csu, "type", ps.type));
    l->errors = ctr_of(s2(errors, "csu", ps.csu, "type", ps.type));
    l->lag = s2(lag, "csu", ps.csu, "type", ps.type);
  }
}

static void open_csus(struct csr_relay *r, struct relay_metrics *m) {
  struct csr_family *adm = fam(r, "csurelay_admitted_total", "Events durably admitted.", 1);
  struct csr_family *dup = fam(r, "csurelay_duplicates_total", "Rows already admitted.", 1);
  struct csr_family *req = fam(r, "csurelay_enrich_requests_total", "Enrichment GETs sent.", 1);
  struct csr_family *inf = fam(r, "csurelay_enrich_in_flight", "Enrichment GETs in flight.", 0);
  struct csr_family *q = fam(r, "csurelay_enrich_queued", "Enrichment GETs waiting for a slot.", 0);
  struct csr_family *win =
      fam(r, "csurelay_enrich_window", "Enrichment GETs the CSU may have in flight now.", 0);
  for (size_t i = 0; i < r->cfg->n_csus; i++) {
    const char *name = r->cfg->csus[i].name;
    struct csu_m *c = &m->csus[i];
    c->admitted = ctr_of(s1(adm, "csu", name));
    c->duplicates = ctr_of(s1(dup, "csu", name));
    c->enrich_requests = ctr_of(s1(req, "csu", name));
    c->enrich_in_flight = s1(inf, "csu", name);
    c->enrich_queued = s1(q, "csu", name);
    c->enrich_window = s1(win, "csu", name);
  }
}

static void open_sink_extra(struct csr_relay *r, size_t i, struct sink_m *k) {
  struct sk_sink *sink = r->sinks[i];
  struct sk_metric xs[MAX_SINK_EXTRA];
  if (sink->ops->metrics == NULL)
    return;
  size_t n = sink->ops->metrics(sink, xs, MAX_SINK_EXTRA);
  for (size_t j = 0; j < n && j < MAX_SINK_EXTRA; j++) {
    char name[128];
    snprintf(name, sizeof(name), "csurelay_sink_%s_%s", sink->ops->name, xs[j].name);
    k->extra[j] = ctr_of(s1(fam(r, name, xs[j].help, xs[j].counter), "sink", sink->conf->name));
    k->n_extra = j + 1;
  }
}

static void open_sinks(struct csr_relay *r, struct relay_metrics *m) {
  struct csr_family *del = fam(r, "csurelay_delivered_total", "Deliveries acknowledged.", 1);
  struct csr_family *skp = fam(r, "csurelay_skipped_total", "Deliveries skipped on purpose.", 1);
  struct csr_family *ret = fam(r, "csurelay_retried_total", "Attempts that failed transiently.", 1);
  struct csr_family *dead = fam(r, "csurelay_dead_total", "Deliveries dead-lettered.", 1);
  struct csr_family *inf = fam(r, "csurelay_sink_in_flight", "Deliveries in flight.", 0);
  struct csr_family *q = fam(r, "csurelay_sink_queued", "Deliveries ready, waiting for a slot.", 0);
  struct csr_family *w = fam(r, "csurelay_sink_waiting", "Deliveries waiting for a retry.", 0);
  struct csr_family *up = fam(r, "csurelay_sink_up", "1 unless the sink is down (see /readyz).", 0);
  for (size_t i = 0; i < r->n_sinks_open; i++) {
    const char *name = r->cfg->sinks[i].name;
    struct sink_m *k = &m->sinks[i];
    k->delivered = ctr_of(s1(del, "sink", name));
    k->skipped = ctr_of(s1(skp, "sink", name));
    k->retried = ctr_of(s1(ret, "sink", name));
    k->dead = ctr_of(s1(dead, "sink", name));
    k->in_flight = s1(inf, "sink", name);
    k->queued = s1(q, "sink", name);
    k->waiting = s1(w, "sink", name);
    k->up = s1(up, "sink", name);
    open_sink_extra(r, i, k);
  }
}

static void open_globals(struct csr_relay *r, struct relay_metrics *m) {
  m->live = s0(fam(r, "csurelay_live_events", "Admitted events not finished.", 0));
  m->parked = s0(fam(r, "csurelay_parked_events", "Live events holding only dead letters.", 0));
  m->dead_letters = s0(fam(r, "csurelay_dead_letters", "Deliveries in the dead-letter queue.", 0));
  m->dedupe_ids = s0(fam(r, "csurelay_dedupe_finished_ids", "Finished ids kept for dedupe.", 0));
  m->state_bytes = s0(fam(r, "csurelay_state_bytes", "Heap held by the state model.", 0));
  m->heap_bytes =
      s0(fam(r, "csurelay_heap_bytes", "Heap in use (what limits.memory_mb bounds).", 0));
  m->resident_bytes =
      s0(fam(r, "process_resident_memory_bytes", "Resident memory of the process.", 0));
  m->aof_bytes = s0(fam(r, "csurelay_aof_bytes", "Size of the append-only file.", 0));
  m->aof_healthy = s0(fam(r, "csurelay_aof_healthy", "1 while the AOF is healthy.", 0));
  m->fsync_last = s0(fam(r, "csurelay_aof_fsync_last_seconds", "Duration of the last fsync.", 0));
  m->fsync_max = s0(fam(r, "csurelay_aof_fsync_max_seconds", "Longest fsync since open.", 0));
  m->fsyncs = ctr_of(s0(fam(r, "csurelay_aof_fsyncs_total", "fsyncs of the AOF.", 1)));
  m->fsync_seconds =
      ctr_of(s0(fam(r, "csurelay_aof_fsync_seconds_total", "Time spent in fsync.", 1)));
  m->torn_tails =
      ctr_of(s0(fam(r, "csurelay_aof_torn_tails_total", "Torn AOF tails truncated at open.", 1)));
  m->compactions = ctr_of(s0(fam(r, "csurelay_aof_compactions_total", "AOF rewrites.", 1)));
  m->cache_entries = s0(fam(r, "csurelay_customer_cache_entries", "Customers cached.", 0));
  m->cache_bytes = s0(fam(r, "csurelay_customer_cache_bytes",
                          "Estimated size of the cached customers (documents and entries).", 0));
  m->cache_hits = ctr_of(s0(fam(r, "csurelay_customer_cache_hits_total", "Cache hits.", 1)));
  m->cache_misses = ctr_of(s0(fam(r, "csurelay_customer_cache_misses_total", "Cache misses.", 1)));
  m->coalesced = ctr_of(
      s0(fam(r, "csurelay_enrich_coalesced_total", "Fetches that joined a GET in flight.", 1)));
}

int csr_relay__metrics_open(struct csr_relay *r) {
  struct relay_metrics *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return UV_ENOMEM;
  r->m = m;
  m->n_lanes = r->poll ? pl_poll_lanes(r->poll) : 0;
  m->lanes = calloc(m->n_lanes ? m->n_lanes : 1, sizeof(*m->lanes));
  m->csus = calloc(r->cfg->n_csus ? r->cfg->n_csus : 1, sizeof(*m->csus));
  m->sinks = calloc(r->cfg->n_sinks ? r->cfg->n_sinks : 1, sizeof(*m->sinks));
  if (m->lanes == NULL || m->csus == NULL || m->sinks == NULL)
    return UV_ENOMEM;
  if (r->metrics == NULL)
    return 0;
  open_lanes(r, m);
  open_csus(r, m);
  open_sinks(r, m);
  open_globals(r, m);
  return 0;
}

void csr_relay__metrics_free(struct csr_relay *r) {
  if (r->m == NULL)
    return;
  free(r->m->lanes);
  free(r->m->csus);
  free(r->m->sinks);
  free(r->m);
  r->m = NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Collection                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static void collect_lanes(struct csr_relay *r, struct relay_metrics *m) {
  for (size_t i = 0; i < m->n_lanes; i++) {
    struct pl_poll_stats ps;
    if (pl_poll_stats(r->poll, i, &ps) < 0)
      continue;
    ctr_set(&m->lanes[i].polled, ps.events);
    ctr_set(&m->lanes[i].searches, ps.searches);
    ctr_set(&m->lanes[i].errors, ps.errors);
    gauge_set(m->lanes[i].lag, ps.cursor_lag_s);
  }
}

static void collect_csus(struct csr_relay *r, struct relay_metrics *m) {
  for (size_t i = 0; i < r->cfg->n_csus; i++) {
    struct pl_admit_csu_stats as;
    struct csu_m *c = &m->csus[i];
    if (pl_admit_csu_stats(r->admit, i, &as) == 0) {
      ctr_set(&c->admitted, as.admitted);
      ctr_set(&c->duplicates, as.duplicates);
    }
    const struct pl_enrich_csu_stats *es =
        r->enrich ? pl_enrich_csu_stats(r->enrich, &r->cfg->csus[i]) : NULL;
    if (es != NULL) {
      ctr_set(&c->enrich_requests, es->requests);
      gauge_set(c->enrich_in_flight, es->in_flight);
      gauge_set(c->enrich_queued, es->queued);
      gauge_set(c->enrich_window, es->window);
    }
  }
}

static void collect_sinks(struct csr_relay *r, struct relay_metrics *m) {
  for (size_t i = 0; i < r->n_sinks_open; i++) {
    const struct sk_sink *s = r->sinks[i];
    struct sink_m *k = &m->sinks[i];
    struct pl_route_sink_stats rs;
    ctr_set(&k->delivered, s->delivered);
    ctr_set(&k->skipped, s->skipped);
    ctr_set(&k->retried, s->retried);
    ctr_set(&k->dead, s->dead);
    if (pl_route_sink_stats(r->route, i, &rs) == 0) {
      gauge_set(k->in_flight, (double)rs.sched.in_flight);
      gauge_set(k->queued, (double)rs.sched.queued);
      gauge_set(k->waiting, (double)rs.sched.waiting);
    }
    gauge_set(k->up, r->watch[i].down ? 0 : 1);
    struct sk_metric xs[MAX_SINK_EXTRA];
    size_t n = s->ops->metrics ? s->ops->metrics((struct sk_sink *)s, xs, MAX_SINK_EXTRA) : 0;
    for (size_t j = 0; j < n && j < k->n_extra; j++) {
      if (xs[j].counter)
        ctr_set(&k->extra[j], (uint64_t)xs[j].value);
      else
        gauge_set(k->extra[j].s, xs[j].value);
    }
  }
}

static void collect_globals(struct csr_relay *r, struct relay_metrics *m) {
  struct pl_state_stats ss;
  pl_state_stats(csr_relay_state(r), &ss);
  gauge_set(m->live, (double)ss.live);
  gauge_set(m->parked, (double)ss.parked);
  gauge_set(m->dead_letters, (double)ss.dead_letters);
  gauge_set(m->dedupe_ids, (double)ss.finished);
  gauge_set(m->state_bytes, (double)(ss.live_bytes + ss.seen_bytes));
  gauge_set(m->heap_bytes, (double)csr_heap_in_use());
  gauge_set(m->resident_bytes, (double)csr_resident_bytes());
  const struct pl_store_stats *st = pl_store_stats(pl_admit_store(r->admit));
  gauge_set(m->aof_bytes, (double)st->file_bytes);
  gauge_set(m->aof_healthy, st->healthy ? 1 : 0);
  gauge_set(m->fsync_last, (double)st->fsync_last_us / 1e6);
  gauge_set(m->fsync_max, (double)st->fsync_max_us / 1e6);
  ctr_set(&m->fsyncs, st->fsyncs);
  if (m->fsync_seconds.s)
    m->fsync_seconds.s->value = m->fsync_seconds.base + (double)st->fsync_total_us / 1e6;
  ctr_set(&m->torn_tails, st->torn_tails);
  ctr_set(&m->compactions, st->compactions);
  if (r->enrich == NULL)
    return;
  const struct pl_enrich_stats *es = pl_enrich_stats(r->enrich);
  gauge_set(m->cache_entries, (double)es->cache_entries);
  gauge_set(m->cache_bytes, (double)es->cache_bytes);
  ctr_set(&m->cache_hits, es->cache_hits);
  ctr_set(&m->cache_misses, es->cache_misses);
  ctr_set(&m->coalesced, es->coalesced);
}

void csr_relay_collect(struct csr_relay *r) {
  if (r == NULL || r->m == NULL || r->metrics == NULL || r->stopping)
    return;
  collect_lanes(r, r->m);
  collect_csus(r, r->m);
  collect_sinks(r, r->m);
  collect_globals(r, r->m);
}
