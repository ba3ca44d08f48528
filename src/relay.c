/* The relay (relay.h): builds the pipeline for one configuration, starts it, and takes it apart
 * in the order that loses nothing — stop the ingress (its last JOB_ENDs go to the store) and
 * polling, drain deliveries, close the route stage (its last OUTCOMEs go to the store), the
 * fetcher and the sinks, then the admitter (flush + fsync), the token caches and the HTTP
 * client. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "csurelay/log.h"
#include "heap.h"
#include "relay_internal.h"

#define ENRICH_WINDOW_MAX 64  /* GETs in flight per CSU at most (the adaptive window's ceiling) */
#define MAX_SEARCHES      32  /* Searches in flight over every CSU */
#define SPARE_FDS         256 /* files, listeners, the broker, the admin API's clients */

enum { TICK_MS = 1000, SINK_DOWN_MS = 30000, MEMORY_CHECK_MS = 100, MEMORY_CHECK_IDLE_MS = 1000 };

/* ---------------------------------------------------------------------------------------------- */
/* Wiring callbacks                                                                               */
/* ---------------------------------------------------------------------------------------------- */

static struct pl_tokens *tokens_by_name(void *arg, const char *identity) {
  struct csr_relay *r = arg;
  for (size_t i = 0; identity != NULL && i < r->n_idents; i++)
    if (strcmp(r->idents[i].id->name, identity) == 0)
      return r->idents[i].tokens;
  return NULL;
}

static struct pl_tokens *tokens_of_csu(void *arg, const struct csr_csu *csu) {
  return tokens_by_name(arg, csu->identity_name);
}

/* The admitter exists before the route stage: events reach the stage through the relay. */
static void on_admitted(void *arg, const char *id) {
  struct csr_relay *r = arg;
  if (r->route != NULL)
    pl_route_on_admitted(r->route, id);
}

/* What the events admitted but not yet enriched, and `events_coming` more, will still add to the
 * heap: their documents, at the mean bytes per enrichment so far. Admission stops on the heap in
 * use, but an event's order (10-20 KB) arrives after the event was admitted: without this charge
 * the heap went on to 121 MB under memory_mb 100 at 10,000 ev/s. */
static uint64_t pending_growth(struct csr_relay *r, uint64_t events_coming) {
  if (r->route == NULL || r->enrich == NULL)
    return 0;
  struct pl_route_stats rs;
  pl_route_stats(r->route, &rs);
  const struct pl_enrich_stats *es = pl_enrich_stats(r->enrich);
  return rs.enriched == 0 ? 0 : (rs.enriching + events_coming) * (es->doc_bytes / rs.enriched);
}

/* Whether the last heap reading, plus its growth and the documents still to come for the admitted
 * events and `events_coming` more (pending_growth), passes `mark`. */
static bool passes_mark(struct csr_relay *r, uint64_t events_coming, uint64_t mark) {
  return r->mem_last + r->mem_growth + pending_growth(r, events_coming) > mark;
}

/* Reads the heap: mem_last always, mem_used and mem_growth on a timed reading; mem_over answers
 * for what is admitted. */
static void read_heap(struct csr_relay *r, uint64_t now, bool timed, uint64_t mark) {
  r->mem_read_ms = now;
  if (timed) {
    r->mem_last = csr_heap_in_use();
    r->mem_thread_base = csr_heap_thread_net();
    r->mem_checked_ms = now;
    r->mem_growth = r->mem_last > r->mem_used ? r->mem_last - r->mem_used : 0;
    r->mem_used = r->mem_last;
  } else { /* the timed reading plus what this (the loop) thread added since */
    int64_t added = (int64_t)(csr_heap_thread_net() - r->mem_thread_base);
    r->mem_last = added < 0 && (uint64_t)-added > r->mem_used ? 0 : r->mem_used + (uint64_t)added;
  }
  r->mem_over = passes_mark(r, 0, mark);
  if (timed && r->mem_over != r->mem_logged_over) { /* a change per timed reading, not per page */
    r->mem_logged_over = r->mem_over;
    CSR_LOG(r->mem_over ? CSR_WARN : CSR_INFO,
            r->mem_over ? "memory budget reached: admission waits" : "memory back under budget",
            CSR_KI("heap_mb", (int64_t)(r->mem_last >> 20)),
            CSR_KI("memory_mb", (int64_t)r->cfg->limits.memory_mb));
  }
}

/* limits.memory_mb: admission waits while the heap in use passes 80% of it, leaving the rest for
 * what is already admitted (enrichment documents, HTTP buffers). The heap, not RSS: freed memory
 * that malloc keeps would hold RSS up and admission off for good. Asked before every Search (with
 * the rows it and the Searches in flight may bring) and as events finish. A reading counts as over
 * when the heap, plus its growth over the last timed interval, plus the documents still to come
 * for admitted events and the events coming (pending_growth), would pass the mark. Charging the
 * events coming keeps a second's Searches, started together, from overshooting: at 10,000 ev/s
 * with the new rows read first, the heap reached 127 MB under a mark of 80 without it. Timed
 * readings come every 100 ms once the heap is past half the budget (a burst of Search pages can
 * grow it by 70 MB in a second, measured at 4,000 ev/s), else every second. Between them, once per
 * loop millisecond, the heap is the timed reading plus what the loop thread has added since
 * (jemalloc's per-thread counters: two loads, where its whole reading merges every arena's
 * statistics, ~5 us and 1.5 % of the loop at 10,000 ev/s): after a 60 s outage the catch-up
 * admitted faster than a 100 ms reading could stop it (bench/run outage: peak RSS 158 -> 132-142 MB
 * with this). Other threads' share (Paho's) waits for the next timed reading. glibc's reading
 * (mallinfo2) walks every free chunk, milliseconds on a busy 80 MB heap, so with it the heap
 * between timed readings is the last one. */
static bool over_budget(void *arg, uint64_t events_coming) {
  struct csr_relay *r = arg;
  uint64_t budget = r->cfg->limits.memory_mb << 20;
  if (budget == 0)
    return false;
  uint64_t mark = budget / 10 * 8;
  uint64_t now = rx_now_ms(r->loop);
  uint64_t every = r->mem_used > budget / 2 ? MEMORY_CHECK_MS : MEMORY_CHECK_IDLE_MS;
  bool timed = now - r->mem_checked_ms >= every;
  if (timed || (csr_heap_reads_cheaply() && now != r->mem_read_ms))
    read_heap(r, now, timed, mark);
  if (r->mem_over || events_coming == 0)
    return r->mem_over;
  return passes_mark(r, events_coming, mark);
}

/* ---------------------------------------------------------------------------------------------- */
/* Sink health: a sink is down once it has not delivered for SINK_DOWN_MS while failing           */
/* ---------------------------------------------------------------------------------------------- */

static void watch_sink(struct csr_relay *r, size_t i, uint64_t now) {
  struct sink_watch *w = &r->watch[i];
  const struct sk_sink *s = r->sinks[i];
  uint64_t finals = s->delivered + s->skipped + s->dead;
  char why[128] = "";
  bool not_ready = s->ops->ready && s->ops->ready((struct sk_sink *)s, why, sizeof(why)) < 0;
  if (finals != w->finals || (!not_ready && s->retried == w->retried))
    w->ok_ms = now;
  if (not_ready)
    snprintf(w->why, sizeof(w->why), "%s", why);
  else if (s->retried != w->retried)
    snprintf(w->why, sizeof(w->why), "deliveries failing");
  w->finals = finals;
  w->retried = s->retried;
  w->down = now - w->ok_ms >= SINK_DOWN_MS;
}

/* limits.memory_mb bounds the heap in use (over_budget), but malloc keeps what a burst freed: a
 * 60 s outage left RSS at twice the budget with the heap back under it. Once a second, when RSS
 * passes the budget and its freed-but-resident part passes a quarter of it, that part goes back to
 * the kernel, on the threadpool (1.4 % of the loop at 10,000 ev/s when it ran here). Not below the
 * budget: a purge is an madvise per run of pages with a TLB flush on every core, 3 % of the loop
 * when done every second at 5,000 ev/s for nothing. */
static void trim_heap(struct csr_relay *r) {
  uint64_t budget = r->cfg->limits.memory_mb << 20, rss = csr_resident_bytes();
  if (budget > 0 && rss > budget && rss > r->mem_used + budget / 4)
    (void)csr_heap_release_async(r->loop->uv); /* UV_EBUSY: the last one still runs */
}

static uint64_t on_tick(struct rx_timer *t) {
  struct csr_relay *r = t->data;
  uint64_t now = rx_now_ms(r->loop);
  for (size_t i = 0; i < r->cfg->n_sinks; i++)
    watch_sink(r, i, now);
  trim_heap(r);
  return TICK_MS;
}

int csr_relay_ready(void *arg, char *why, size_t len) {
  struct csr_relay *r = arg;
  if (r == NULL) {
    snprintf(why, len, "pipeline: not running");
    return -1;
  }
  struct pl_admit_stats as;
  pl_admit_stats(r->admit, &as);
  if (!as.healthy) {
    snprintf(why, len, "state: %s", as.health_reason);
    return -1;
  }
  for (size_t i = 0; i < r->cfg->n_sinks; i++)
    if (r->watch[i].down) {
      snprintf(why, len, "sink %s: down for %us or more (%s)", r->cfg->sinks[i].name,
               SINK_DOWN_MS / 1000, r->watch[i].why);
      return -1;
    }
  if (r->stopping) {
    snprintf(why, len, "pipeline: stopping");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Open                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static int open_tokens(struct csr_relay *r, struct csr_err *err) {
  r->idents = calloc(r->cfg->n_identities ? r->cfg->n_identities : 1, sizeof(*r->idents));
  if (r->idents == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < r->cfg->n_identities; i++) {
    r->idents[i].id = &r->cfg->identities[i];
    int rc = pl_tokens_create(r->loop, &r->http, r->idents[i].id, &r->idents[i].tokens);
    if (rc < 0) {
      csr_err_set(err, r->cfg->path, r->idents[i].id->line, "identities", "identity '%s': %s",
                  r->idents[i].id->name, csr_strerror(rc));
      return rc;
    }
    r->n_idents++;
  }
  return 0;
}

static int open_sinks(struct csr_relay *r, struct csr_err *err) {
  size_t n = r->cfg->n_sinks;
  r->sinks = calloc(n ? n : 1, sizeof(*r->sinks));
  r->watch = calloc(n ? n : 1, sizeof(*r->watch));
  if (r->sinks == NULL || r->watch == NULL)
    return UV_ENOMEM;
  r->env = (struct sk_env){.loop = r->loop,
                           .http = &r->http,
                           .default_timeout_ms = r->cfg->limits.http_timeout_ms,
                           .tokens = tokens_by_name,
                           .tokens_arg = r};
  for (size_t i = 0; i < n; i++) {
    int rc = sk_sink_create(&r->cfg->sinks[i], &r->env, &r->sinks[i], err);
    if (rc < 0) {
      snprintf(err->file, sizeof(err->file), "%s", r->cfg->path);
      return rc;
    }
    r->n_sinks_open++;
  }
  return 0;
}

static int open_stages(struct csr_relay *r, struct csr_err *err) {
  const struct csr_config *cfg = r->cfg;
  struct pl_admit_ops aops = {.on_admitted = on_admitted, .over_budget = over_budget};
  int rc = pl_admit_open(r->loop, cfg, NULL, &aops, r, &r->admit, err);
  if (rc < 0)
    return rc;
  if (err->msg[0] != '\0')
    CSR_LOG(CSR_ERROR, "state: damage found in the AOF (kept a copy; see /readyz)",
            CSR_KS("detail", err->msg));
  memset(err, 0, sizeof(*err));
  /* With no CSU there is nothing to poll or enrich: the relay still serves its admin API and
   * delivers what the AOF holds (a CSU may be removed while its events wait in retry). */
  struct pl_enrich_opts eo = {.max_in_flight = ENRICH_WINDOW_MAX,
                              .timeout_ms = (long)cfg->limits.http_timeout_ms};
  if (cfg->n_csus > 0)
    rc = pl_enrich_create(r->loop, &r->http, cfg->csus, cfg->n_csus, tokens_by_name, r, &eo,
                          &r->enrich);
  else
    CSR_LOG(CSR_WARN, "no CSU configured: nothing to poll");
  if (rc == 0 && (rc = open_sinks(r, err)) < 0)
    return rc;
  struct pl_route_opts ro = {.metrics = r->metrics};
  if (rc == 0)
    rc = pl_route_create(r->loop, cfg, r->admit, r->enrich, r->sinks, &ro, &r->route);
  struct pl_poll_opts po = {.max_searches = MAX_SEARCHES,
                            .timeout_ms = (long)cfg->limits.http_timeout_ms};
  if (rc == 0 && cfg->n_csus > 0)
    rc = pl_poll_create(r->loop, &r->http, cfg->csus, cfg->n_csus, tokens_of_csu, r, &po,
                        pl_admit_poll_ops(r->admit), r->admit, &r->poll);
  if (rc == 0 && r->poll != NULL)
    rc = pl_admit_cursors(r->admit, r->poll);
  if (rc < 0 && err->msg[0] == '\0')
    csr_err_set(err, cfg->path, 0, "", "cannot build the pipeline: %s", csr_strerror(rc));
  return rc;
}

/* The customer sync ingress (SPEC section 5) takes its jobs' records through the admitter's
 * store and state, and the token cache of its CSU's identity. */
static int open_ingress(struct csr_relay *r, struct csr_err *err) {
  const struct csr_config *cfg = r->cfg;
  if (!cfg->ingress.present)
    return 0;
  struct cs_ingress_deps deps = {.loop = r->loop,
                                 .cfg = cfg,
                                 .http = &r->http,
                                 .tokens = tokens_by_name(r, cfg->ingress.csu->identity_name),
                                 .admit = r->admit,
                                 .metrics = r->metrics};
  return cs_ingress_open(&deps, &r->ingress, err);
}

static void log_replay(struct csr_relay *r) {
  struct pl_state_stats ss;
  pl_state_stats(csr_relay_state(r), &ss);
  const struct pl_store_stats *st = pl_store_stats(pl_admit_store(r->admit));
  CSR_LOG(CSR_INFO, "state replayed", CSR_KS("dir", r->cfg->state.dir),
          CSR_KI("records", (int64_t)st->records_replayed), CSR_KI("live", (int64_t)ss.live),
          CSR_KI("dead_letters", (int64_t)ss.dead_letters),
          CSR_KI("torn_tails", (int64_t)st->torn_tails), CSR_KI("cursors", (int64_t)ss.cursors));
}

/* The connections the stages may hold at once, each stage bounded by its own window: enrichment
 * per CSU, the Searches, every HTTP sink, a token request per identity, the ingress. The HTTP
 * client gets exactly this as its bound, per host too: every CSU, Dataverse and a webhook may sit
 * behind one host (a gateway, or csusim), and a lower bound there would queue a sink's requests
 * in libcurl behind a distant CSU's GETs. */
static unsigned http_connections(const struct csr_config *cfg) {
  size_t n = cfg->n_csus * ENRICH_WINDOW_MAX + MAX_SEARCHES + cfg->n_identities;
  for (size_t i = 0; i < cfg->n_sinks; i++)
    if (cfg->sinks[i].type != CSR_SINK_MQTT) /* Paho's own connection */
      n += cfg->sinks[i].max_in_flight;
  if (cfg->ingress.present)
    n += CS_INGRESS_MAX_IN_FLIGHT;
  return (unsigned)n;
}

/* Raises the soft limit on open files to `need` when it is lower (as Redis does at start): a
 * service manager's default of 1024 is below what 16 CSUs' windows may hold. Past the hard
 * limit the relay still runs; a connect that finds no descriptor fails and is retried. */
static void fit_open_files(unsigned need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
    return;
  rlim_t soft = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
  if (rl.rlim_cur > soft && setrlimit(RLIMIT_NOFILE, &rl) == 0)
    soft = rl.rlim_cur;
  if (soft < need)
    CSR_LOG(CSR_WARN, "open files: the limit is below what the configuration may hold",
            CSR_KI("limit", (int64_t)soft), CSR_KI("hard_limit", (int64_t)rl.rlim_max),
            CSR_KI("wanted", (int64_t)need));
}

int csr_relay_open(struct rx_loop *loop, const struct csr_config *cfg, struct csr_metrics *metrics,
                   struct csr_relay **out, struct csr_err *err) {
  memset(err, 0, sizeof(*err));
  *out = NULL;
  struct csr_relay *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return UV_ENOMEM;
  r->loop = loop;
  r->cfg = cfg;
  r->metrics = metrics;
  unsigned conns = http_connections(cfg);
  fit_open_files(conns + SPARE_FDS);
  struct rx_http_opts ho = {
      .max_per_host = conns, .max_total = conns, .timeout_ms = (long)cfg->limits.http_timeout_ms};
  int rc = rx_http_init(&r->http, loop, &ho);
  if (rc == 0) {
    r->http_open = true;
    rc = open_tokens(r, err);
  }
  if (rc == 0)
    rc = open_stages(r, err);
  if (rc == 0)
    rc = rx_timer_init(&r->tick, loop);
  if (rc == 0) {
    r->tick_open = true;
    r->tick.data = r;
    rx_timer_unref(&r->tick);
    rc = rx_timer_start(&r->tick, on_tick, TICK_MS);
  }
  if (rc == 0)
    rc = csr_relay__metrics_open(r);
  if (rc == 0)
    rc = open_ingress(r, err);
  if (rc < 0) {
    if (err->msg[0] == '\0')
      csr_err_set(err, cfg->path, 0, "", "cannot start the pipeline: %s", csr_strerror(rc));
    csr_relay_stop(r, 0, NULL, NULL);
    return rc;
  }
  log_replay(r);
  uint64_t now = rx_now_ms(loop);
  for (size_t i = 0; i < cfg->n_sinks; i++)
    r->watch[i].ok_ms = now;
  pl_route_set_poll(r->route, r->poll);
  pl_route_resume(r->route);
  rc = r->poll ? pl_poll_start(r->poll) : 0;
  if (rc < 0) {
    csr_err_set(err, cfg->path, 0, "", "cannot start polling: %s", csr_strerror(rc));
    csr_relay_stop(r, 0, NULL, NULL);
    return rc;
  }
  *out = r;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Stop: each step starts the next from its callback                                              */
/* ---------------------------------------------------------------------------------------------- */

static void step(struct csr_relay *r);

static void on_step_done(void *arg) {
  struct csr_relay *r = arg;
  if (--r->waiting == 0)
    step(r);
}

static void on_http_closed(struct rx_http *http) {
  on_step_done(http->data);
}

static void on_tick_closed(struct rx_timer *t) {
  on_step_done(t->data);
}

static void on_sink_closed(void *arg) {
  on_step_done(arg);
}

static void on_drained(void *arg) {
  struct csr_relay *r = arg;
  struct pl_route_stats st;
  pl_route_stats(r->route, &st);
  CSR_LOG(CSR_INFO, "pipeline drained", CSR_KI("events_left", (int64_t)st.events));
  on_step_done(arg);
}

static void finish(struct csr_relay *r) {
  void (*cb)(void *arg) = r->stop_cb;
  void *arg = r->stop_arg;
  free(r->idents);
  free(r->sinks);
  free(r->watch);
  csr_relay__metrics_free(r);
  free(r);
  if (cb != NULL)
    cb(arg);
}

/* One stage at a time; `waiting` counts the callbacks the current step expects. */
static void step(struct csr_relay *r) {
  r->waiting = 1; /* held while this step starts its closes */
  switch (r->phase++) {
    case 0:
      if (r->ingress) { /* first: its JOB_ENDs must reach the store before the store closes */
        r->waiting++;
        cs_ingress_stop(r->ingress, on_step_done, r);
        r->ingress = NULL;
      }
      if (r->route) /* the poll stage frees itself when stopped: nothing may resume it after */
        pl_route_set_poll(r->route, NULL);
      if (r->poll) {
        r->waiting++;
        pl_poll_stop(r->poll, on_step_done, r);
      }
      if (r->tick_open) {
        r->waiting++;
        rx_timer_close(&r->tick, on_tick_closed);
      }
      break;
    case 1:
      if (r->route && r->drain_ms > 0) {
        r->waiting++;
        pl_route_drain(r->route, r->drain_ms, on_drained, r);
      }
      break;
    case 2:
      if (r->route) {
        r->waiting++;
        pl_route_close(r->route, on_step_done, r);
      }
      break;
    case 3:
      if (r->enrich) {
        r->waiting++;
        pl_enrich_destroy(r->enrich, on_step_done, r);
      }
      for (size_t i = 0; i < r->n_sinks_open; i++) {
        r->waiting++;
        sk_sink_close(r->sinks[i], on_sink_closed, r);
      }
      break;
    case 4:
      if (r->admit) {
        r->waiting++;
        pl_admit_close(r->admit, on_step_done, r);
      }
      for (size_t i = 0; i < r->n_idents; i++) {
        r->waiting++;
        pl_tokens_destroy(r->idents[i].tokens, on_step_done, r);
      }
      break;
    case 5:
      if (r->http_open) {
        r->waiting++;
        r->http.data = r;
        rx_http_close(&r->http, on_http_closed);
      }
      break;
    default:
      finish(r);
      return;
  }
  on_step_done(r);
}

void csr_relay_stop(struct csr_relay *r, uint64_t drain_ms, void (*cb)(void *arg), void *arg) {
  if (r == NULL || r->stopping)
    return;
  r->stopping = true;
  r->drain_ms = drain_ms;
  r->stop_cb = cb;
  r->stop_arg = arg;
  step(r);
}

/* ---------------------------------------------------------------------------------------------- */
/* Accessors                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

struct pl_state *csr_relay_state(struct csr_relay *r) {
  return pl_admit_state(r->admit);
}

struct pl_route *csr_relay_route(struct csr_relay *r) {
  return r->route;
}

const struct csr_config *csr_relay_config(const struct csr_relay *r) {
  return r->cfg;
}
