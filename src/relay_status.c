/* GET /v1/status: one JSON object with what an operator asks first — is admission healthy, how
 * far behind is each CSU, what is each sink doing, how big is the backlog and the DLQ. */
#include <stdio.h>
#include <string.h>

#include "csurelay/timefmt.h"
#include "relay_internal.h"

static void kuint(struct csr_jw *jw, const char *key, uint64_t v) {
  csr_jw_kint(jw, key, v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

static void ktime(struct csr_jw *jw, const char *key, int64_t ms) {
  char text[40];
  if (ms <= 0 || csr_time_format(ms, text, sizeof(text)) == 0)
    csr_jw_kstr(jw, key, NULL);
  else
    csr_jw_kstr(jw, key, text);
}

static void status_state(struct csr_relay *r, struct csr_jw *jw) {
  struct pl_state_stats ss;
  struct pl_admit_stats as;
  pl_state_stats(csr_relay_state(r), &ss);
  pl_admit_stats(r->admit, &as);
  csr_jw_key(jw, "state");
  csr_jw_obj(jw);
  kuint(jw, "live", ss.live);
  kuint(jw, "parked", ss.parked);
  kuint(jw, "finished", ss.finished);
  kuint(jw, "dead_letters", ss.dead_letters);
  kuint(jw, "pending", ss.pending);
  kuint(jw, "waiting", ss.waiting);
  kuint(jw, "live_bytes", ss.live_bytes);
  kuint(jw, "seen_bytes", ss.seen_bytes);
  csr_jw_obj_end(jw);
  csr_jw_key(jw, "admission");
  csr_jw_obj(jw);
  csr_jw_kbool(jw, "healthy", as.healthy);
  csr_jw_kstr(jw, "reason", as.health_reason[0] ? as.health_reason : NULL);
  kuint(jw, "pages", as.pages);
  kuint(jw, "rows", as.rows);
  kuint(jw, "admitted", as.admitted);
  kuint(jw, "duplicates", as.duplicates);
  kuint(jw, "unrouted", as.unrouted);
  kuint(jw, "held_pages", as.held);
  csr_jw_obj_end(jw);
  const struct pl_store_stats *st = &as.store;
  csr_jw_key(jw, "store");
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "dir", r->cfg->state.dir);
  kuint(jw, "file_bytes", st->file_bytes);
  kuint(jw, "records_replayed", st->records_replayed);
  kuint(jw, "appends", st->appends);
  kuint(jw, "fsyncs", st->fsyncs);
  kuint(jw, "fsync_last_us", st->fsync_last_us);
  kuint(jw, "fsync_max_us", st->fsync_max_us);
  kuint(jw, "torn_tails", st->torn_tails);
  kuint(jw, "corrupt_regions", st->corrupt_regions);
  kuint(jw, "compactions", st->compactions);
  csr_jw_kbool(jw, "healthy", st->healthy);
  csr_jw_obj_end(jw);
}

static void status_lane(struct csr_jw *jw, const struct pl_poll_stats *ps) {
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "type", ps->type);
  ktime(jw, "cursor", ps->cursor_ms);
  csr_jw_key(jw, "cursor_lag_s");
  char lag[32];
  snprintf(lag, sizeof(lag), "%.3f", ps->cursor_lag_s);
  csr_jw_num_text(jw, lag);
  kuint(jw, "searches", ps->searches);
  kuint(jw, "events", ps->events);
  kuint(jw, "errors", ps->errors);
  csr_jw_kbool(jw, "backing_off", ps->backing_off);
  csr_jw_kstr(jw, "last_error", ps->last_error[0] ? ps->last_error : NULL);
  csr_jw_obj_end(jw);
}

static void status_csus(struct csr_relay *r, struct csr_jw *jw) {
  csr_jw_key(jw, "csus");
  csr_jw_arr(jw);
  size_t lanes = r->poll ? pl_poll_lanes(r->poll) : 0;
  for (size_t i = 0; i < r->cfg->n_csus; i++) {
    const struct csr_csu *c = &r->cfg->csus[i];
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "name", c->name);
    struct pl_admit_csu_stats as;
    if (pl_admit_csu_stats(r->admit, i, &as) < 0)
      as = (struct pl_admit_csu_stats){0};
    kuint(jw, "admitted", as.admitted);
    kuint(jw, "duplicates", as.duplicates);
    csr_jw_key(jw, "lanes");
    csr_jw_arr(jw);
    for (size_t j = 0; j < lanes; j++) {
      struct pl_poll_stats ps;
      if (pl_poll_stats(r->poll, j, &ps) == 0 && strcmp(ps.csu, c->name) == 0)
        status_lane(jw, &ps);
    }
    csr_jw_arr_end(jw);
    const struct pl_enrich_csu_stats *es = r->enrich ? pl_enrich_csu_stats(r->enrich, c) : NULL;
    csr_jw_key(jw, "enrich");
    csr_jw_obj(jw);
    kuint(jw, "requests", es ? es->requests : 0);
    kuint(jw, "in_flight", es ? es->in_flight : 0);
    kuint(jw, "queued", es ? es->queued : 0);
    kuint(jw, "window", es ? es->window : 0);
    csr_jw_obj_end(jw);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

static void status_sinks(struct csr_relay *r, struct csr_jw *jw) {
  csr_jw_key(jw, "sinks");
  csr_jw_arr(jw);
  for (size_t i = 0; i < r->n_sinks_open; i++) {
    struct pl_route_sink_stats rs;
    if (pl_route_sink_stats(r->route, i, &rs) < 0)
      continue;
    const struct sk_sink *s = rs.sink;
    csr_jw_obj(jw);
    csr_jw_kstr(jw, "name", rs.name);
    csr_jw_kstr(jw, "type", s->ops->name);
    csr_jw_kbool(jw, "ready", rs.ready_reason[0] == '\0');
    csr_jw_kstr(jw, "not_ready_reason", rs.ready_reason[0] ? rs.ready_reason : NULL);
    csr_jw_kbool(jw, "down", r->watch[i].down);
    kuint(jw, "in_flight", rs.sched.in_flight);
    kuint(jw, "queued", rs.sched.queued);
    kuint(jw, "waiting", rs.sched.waiting);
    kuint(jw, "delivered", s->delivered);
    kuint(jw, "skipped", s->skipped);
    kuint(jw, "retried", s->retried);
    kuint(jw, "dead", s->dead);
    kuint(jw, "pauses", rs.sched.pauses);
    ktime(jw, "paused_until", rs.sched.paused_until_ms);
    csr_jw_obj_end(jw);
  }
  csr_jw_arr_end(jw);
}

static void status_route(struct csr_relay *r, struct csr_jw *jw) {
  struct pl_route_stats st;
  pl_route_stats(r->route, &st);
  static const struct pl_enrich_stats none;
  const struct pl_enrich_stats *es = r->enrich ? pl_enrich_stats(r->enrich) : &none;
  csr_jw_key(jw, "route");
  csr_jw_obj(jw);
  kuint(jw, "events", st.events);
  kuint(jw, "enriching", st.enriching);
  kuint(jw, "enrich_dead", st.enrich_dead);
  kuint(jw, "enrich_missing", st.enrich_missing);
  kuint(jw, "unroutable", st.unroutable);
  kuint(jw, "dlq_replayed", st.replayed);
  kuint(jw, "dlq_deleted", st.deleted);
  kuint(jw, "enrich_requests", es->requests);
  kuint(jw, "enrich_coalesced", es->coalesced);
  kuint(jw, "customer_cache_hits", es->cache_hits);
  kuint(jw, "customer_cache_misses", es->cache_misses);
  csr_jw_obj_end(jw);
}

/* The customer sync ingress: where it listens, what it answered, how its jobs ended. */
static void status_ingress(struct csr_relay *r, struct csr_jw *jw) {
  struct cs_ingress_stats st;
  struct cs_jobs_stats js;
  cs_ingress_stats(r->ingress, &st);
  cs_jobs_stats(pl_state_jobs(csr_relay_state(r)), &js);
  csr_jw_key(jw, "ingress");
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "host", r->cfg->ingress.listen.host);
  kuint(jw, "port", (uint64_t)cs_ingress_port(r->ingress));
  csr_jw_kstr(jw, "csu", r->cfg->ingress.csu_name);
  kuint(jw, "requests", st.requests);
  kuint(jw, "invalid", st.invalid);
  kuint(jw, "unauthorized", st.unauthorized);
  kuint(jw, "accepted", st.accepted);
  kuint(jw, "created", st.created);
  kuint(jw, "updated", st.updated);
  kuint(jw, "failed", st.failed);
  kuint(jw, "retries", st.retries);
  kuint(jw, "searches", st.searches);
  kuint(jw, "answered_sync", st.answered_sync);
  kuint(jw, "answered_async", st.answered_async);
  kuint(jw, "running", st.running);
  kuint(jw, "queued", st.queued);
  kuint(jw, "jobs_pending", js.pending);
  kuint(jw, "jobs_ended", js.ended);
  kuint(jw, "accounts_mapped", js.accounts);
  csr_jw_obj_end(jw);
}

int csr_relay_status_json(struct csr_relay *r, struct csr_jw *jw) {
  char why[256] = "";
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "version", CSR_VERSION);
  csr_jw_kbool(jw, "ready", csr_relay_ready(r, why, sizeof(why)) == 0);
  csr_jw_kstr(jw, "not_ready_reason", why[0] ? why : NULL);
  ktime(jw, "now", rx_wall_ms());
  status_state(r, jw);
  status_csus(r, jw);
  status_sinks(r, jw);
  status_route(r, jw);
  if (r->ingress != NULL)
    status_ingress(r, jw);
  csr_jw_obj_end(jw);
  return 0;
}
