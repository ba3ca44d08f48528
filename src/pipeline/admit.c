/* The admit stage (SPEC §3, STYLE §7.4 "Durable first"; the design is in pipeline.h, "Admit
 * stage"): the poll stage's pages become ADMIT records in the store and entries of the state.
 *
 * A page whose rows are all known is answered at once. Otherwise the admitter allocates one
 * `struct held` for it with a durable future per ADMIT it appends (a future per record, so an
 * fsync failure of any one of them is seen even if a later fsync succeeds). Each record is applied
 * to the state right after its append, so repeats are duplicates at once. When the page's last
 * future completes, the page is answered: 0 and on_admitted for its new live ids when every record
 * is durable, else the admitter fails for good (see pipeline.h). Close answers the pages still held
 * with UV_ECANCELED, closes the store, and frees everything once the store is gone and every
 * future has come back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/log.h"
#include "internal.h"

/** One appended ADMIT of a held page. */
struct slot {
  struct rx_fut fut;
  struct held *h;
  size_t row;  /* index into the page's events */
  bool report; /* a routed event: on_admitted once durable */
};

/** A page waiting for its records to be durable. */
struct held {
  struct pl_admit *a;
  struct pl_poll_page *page; /* NULL once answered (by close) */
  struct held *prev, *next;
  size_t outstanding; /* futures not yet completed */
  int durable_rc;     /* the first failed future's result */
  int refused;        /* an append refused mid-page: the page's answer */
  size_t n;
  struct slot slots[];
};

struct route {
  const char *type;
  const char **sinks;
  size_t n_sinks;
};

struct pl_admit {
  struct rx_loop *loop;
  const struct csr_config *cfg;
  struct pl_admit_ops ops;
  void *arg;
  struct pl_poll_ops poll_ops;
  struct pl_state *state;
  struct pl_store *store;
  struct route *routes;
  size_t n_routes;
  const char **warned; /* (csu, type) strings of the config already warned about as unrouted */
  size_t n_warned;
  struct csr_jw jw;
  struct pl_admit_csu_stats *csu_st; /* per configured CSU (cfg->csus order) */
  struct held *held;                 /* list of held pages */
  int fail_rc;                       /* the failure that stopped admission, 0 while admitting */
  char reason[256];
  bool closing;
  bool store_closed;
  void (*close_cb)(void *arg);
  void *close_arg;
  struct pl_admit_stats st;
};

/* ---------------------------------------------------------------------------------------------- */
/* Failure and close */
/* ---------------------------------------------------------------------------------------------- */

static void fail_admission(struct pl_admit *a, int rc, const char *what, const char *id) {
  if (a->fail_rc != 0)
    return;
  a->fail_rc = rc < 0 ? rc : UV_EIO;
  snprintf(a->reason, sizeof(a->reason), "admission stopped: %s%s%s: %s", what, id ? " of " : "",
           id ? id : "", csr_strerror(rc));
  CSR_LOG(CSR_ERROR, "admit: store failure, admission stopped until restart",
          CSR_KS("reason", a->reason), CSR_KS("store", pl_store_stats(a->store)->health_reason));
}

void pl_admit_fail(struct pl_admit *a, int rc, const char *what, const char *id) {
  if (a != NULL)
    fail_admission(a, rc, what, id);
}

static void finish_close(struct pl_admit *a) {
  if (!a->closing || !a->store_closed || a->held != NULL)
    return;
  void (*cb)(void *) = a->close_cb;
  void *arg = a->close_arg;
  pl_state_destroy(a->state);
  csr_jw_free(&a->jw);
  for (size_t i = 0; i < a->n_routes; i++)
    free(a->routes[i].sinks);
  free(a->routes);
  free(a->warned);
  free(a->csu_st);
  free(a);
  if (cb)
    cb(arg);
}

static void on_store_closed(void *arg) {
  struct pl_admit *a = arg;
  a->store_closed = true;
  finish_close(a);
}

static void answer(struct pl_admit *a, struct pl_poll_page *page, int rc) {
  a->st.page_failures += rc < 0;
  pl_poll_page_done(page, rc);
}

void pl_admit_close(struct pl_admit *a, void (*cb)(void *arg), void *arg) {
  if (a == NULL || a->closing)
    return;
  a->closing = true;
  a->close_cb = cb;
  a->close_arg = arg;
  for (struct held *h = a->held; h != NULL; h = h->next)
    if (h->page != NULL) {
      answer(a, h->page, UV_ECANCELED);
      h->page = NULL;
    }
  pl_store_close(a->store, on_store_closed, a);
}

/* ---------------------------------------------------------------------------------------------- */
/* Pages */
/* ---------------------------------------------------------------------------------------------- */

static const struct route *find_route(const struct pl_admit *a, const char *type) {
  for (size_t i = 0; i < a->n_routes; i++)
    if (strcmp(a->routes[i].type, type) == 0)
      return &a->routes[i];
  return NULL;
}

static void unlink_held(struct pl_admit *a, struct held *h) {
  if (h->prev)
    h->prev->next = h->next;
  else
    a->held = h->next;
  if (h->next)
    h->next->prev = h->prev;
  a->st.held--;
}

static void page_durable(struct held *h) {
  struct pl_admit *a = h->a;
  struct pl_poll_page *page = h->page;
  if (h->durable_rc < 0)
    fail_admission(a, h->durable_rc, "ADMIT not durable", NULL);
  if (page != NULL) {
    if (a->fail_rc != 0) {
      answer(a, page, a->fail_rc);
    } else {
      for (size_t i = 0; i < h->n && a->ops.on_admitted != NULL; i++)
        if (h->slots[i].report)
          a->ops.on_admitted(a->arg, page->events[h->slots[i].row].id);
      answer(a, page, h->refused);
    }
  }
  unlink_held(a, h);
  free(h);
  finish_close(a);
}

static void on_durable(struct rx_fut *fut) {
  struct slot *s = RX_CONTAINER_OF(fut, struct slot, fut);
  struct held *h = s->h;
  if (fut->result < 0 && h->durable_rc == 0)
    h->durable_rc = fut->result;
  if (--h->outstanding == 0)
    page_durable(h);
}

static void warn_unrouted(struct pl_admit *a, const struct pl_poll_page *page) {
  for (size_t i = 0; i < a->n_warned; i++)
    if (a->warned[i] == page->type)
      return;
  const char **w = realloc(a->warned, (a->n_warned + 1) * sizeof(*w));
  if (w != NULL) {
    a->warned = w;
    a->warned[a->n_warned++] = page->type;
  }
  CSR_LOG(CSR_WARN, "admit: no route for this event type; its events are admitted with no sinks",
          CSR_KS("csu", page->csu->name), CSR_KS("type", page->type));
}

/* Encodes, appends and applies the ADMIT of row i into slot s. < 0: refused (nothing changed);
 * 1: appended but the apply failed (the admitter has failed); 0: admitted. */
static int admit_row(struct pl_admit *a, struct held *h, struct slot *s,
                     const struct pl_poll_page *page, size_t i, const struct route *r,
                     int64_t now_ms) {
  const struct pl_poll_event *e = &page->events[i];
  struct pl_rec_admit rec = {.id = e->id,
                             .csu = page->csu->name,
                             .type = page->type,
                             .time_ms = e->time_ms,
                             .admitted_ms = now_ms,
                             .sinks = r ? r->sinks : NULL,
                             .n_sinks = r ? r->n_sinks : 0,
                             .row_json = e->row_json,
                             .row_len = e->row_len};
  const char *text = NULL;
  size_t len = 0;
  csr_jw_reset(&a->jw);
  int rc = pl_rec_admit(&a->jw, &rec);
  if (rc == 0)
    rc = csr_jw_finish(&a->jw, &text, &len);
  if (rc == 0)
    rc = pl_store_append(a->store, PL_REC_ADMIT, text, len, &s->fut, on_durable);
  if (rc < 0) {
    CSR_LOG(CSR_ERROR, "admit: ADMIT refused; the page fails and its window is read again",
            CSR_KS("id", e->id), CSR_KI("bytes", rc == UV_E2BIG ? (int64_t)len : 0), CSR_KERR(rc));
    return rc;
  }
  s->h = h;
  s->row = i;
  s->report = r != NULL && r->n_sinks > 0;
  h->outstanding++;
  a->st.admitted++;
  rc = pl_state_admit(a->state, &rec);
  if (rc < 0) {
    s->report = false;
    CSR_LOG(CSR_ERROR, "admit: an appended ADMIT did not apply", CSR_KS("id", e->id),
            CSR_KS("state", pl_state_error(a->state)));
    fail_admission(a, rc, "apply", e->id);
    return 1;
  }
  if (r == NULL)
    a->st.unrouted++;
  return 0;
}

/* The page's CSU's counters (its csu points into cfg->csus: the poll stage was built from it). */
static struct pl_admit_csu_stats *csu_stats(struct pl_admit *a, const struct csr_csu *csu) {
  static struct pl_admit_csu_stats sink; /* a CSU from elsewhere: counted nowhere */
  uintptr_t p = (uintptr_t)csu, base = (uintptr_t)a->cfg->csus;
  size_t i = (p - base) / sizeof(*csu);
  return p >= base && i < a->cfg->n_csus && &a->cfg->csus[i] == csu ? &a->csu_st[i] : &sink;
}

static void on_page(void *arg, struct pl_poll_page *page) {
  struct pl_admit *a = arg;
  struct pl_admit_csu_stats *cs = csu_stats(a, page->csu);
  a->st.pages++;
  if (a->closing || a->fail_rc != 0) {
    answer(a, page, a->closing ? UV_ECANCELED : a->fail_rc);
    return;
  }
  a->st.rows += page->n;
  size_t fresh = 0;
  for (size_t i = 0; i < page->n; i++)
    fresh += !pl_state_seen(a->state, page->events[i].id);
  if (fresh == 0) {
    a->st.duplicates += page->n;
    cs->duplicates += page->n;
    answer(a, page, 0); /* the poll stage allows an answer from inside on_page */
    return;
  }
  struct held *h = calloc(1, sizeof(*h) + fresh * sizeof(struct slot));
  if (h == NULL) {
    answer(a, page, UV_ENOMEM);
    return;
  }
  h->a = a;
  h->page = page;
  const struct route *r = find_route(a, page->type);
  if (r == NULL)
    warn_unrouted(a, page);
  int64_t now_ms = rx_wall_ms();
  for (size_t i = 0; i < page->n; i++) {
    if (pl_state_seen(a->state, page->events[i].id)) { /* known, or earlier in this page */
      a->st.duplicates++;
      cs->duplicates++;
      continue;
    }
    int rc = admit_row(a, h, &h->slots[h->n], page, i, r, now_ms);
    if (rc < 0) {
      h->refused = rc;
      break;
    }
    h->n++;
    cs->admitted++;
    if (rc > 0)
      break;
  }
  if (h->outstanding == 0) {
    answer(a, page, a->fail_rc != 0 ? a->fail_rc : h->refused);
    free(h);
    return;
  }
  h->next = a->held;
  if (a->held)
    a->held->prev = h;
  a->held = h;
  a->st.held++;
}

static void on_cursor(void *arg, const struct csr_csu *csu, const char *type, int64_t cursor_ms) {
  struct pl_admit *a = arg;
  if (a->closing || a->fail_rc != 0)
    return;
  const char *text = NULL;
  size_t len = 0;
  csr_jw_reset(&a->jw);
  int rc = pl_rec_cursor(&a->jw, csu->name, type, cursor_ms);
  if (rc == 0)
    rc = csr_jw_finish(&a->jw, &text, &len);
  if (rc == 0)
    rc = pl_store_append(a->store, PL_REC_CURSOR, text, len, NULL, NULL);
  if (rc == 0) {
    a->st.cursors++;
    rc = pl_state_apply(a->state, PL_REC_CURSOR, text, len);
  }
  if (rc < 0) /* harmless: the overlap covers a cursor that was not written */
    CSR_LOG(CSR_WARN, "admit: cursor not recorded", CSR_KS("csu", csu->name), CSR_KS("type", type),
            CSR_KERR(rc));
  a->st.expired += pl_state_expire(a->state);
}

static bool has_room_for(const struct pl_admit *a, uint64_t coming);

static int on_full(void *arg, uint64_t rows_coming) {
  struct pl_admit *a = arg;
  if (has_room_for(a, rows_coming))
    return 0;
  a->st.full++;
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Open and the rest of the API */
/* ---------------------------------------------------------------------------------------------- */

static void set_err(struct csr_err *err, const char *msg, int rc) {
  if (err == NULL)
    return;
  memset(err, 0, sizeof(*err));
  snprintf(err->msg, sizeof(err->msg), "admit: %s: %s", msg, csr_strerror(rc));
}

static int build(struct pl_admit *a, const struct csr_config *cfg) {
  a->routes = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof(*a->routes));
  if (a->routes == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->n_routes; i++) {
    const struct csr_route *cr = &cfg->routes[i];
    struct route *r = &a->routes[a->n_routes++];
    r->type = cr->event_type;
    r->sinks = calloc(cr->n_deliver ? cr->n_deliver : 1, sizeof(*r->sinks));
    if (r->sinks == NULL)
      return UV_ENOMEM;
    for (size_t j = 0; j < cr->n_deliver; j++)
      r->sinks[r->n_sinks++] = cr->deliver[j].sink_name;
  }
  a->csu_st = calloc(cfg->n_csus ? cfg->n_csus : 1, sizeof(*a->csu_st));
  if (a->csu_st == NULL)
    return UV_ENOMEM;
  struct pl_state_horizon *hz = calloc(cfg->n_csus ? cfg->n_csus : 1, sizeof(*hz));
  if (hz == NULL)
    return UV_ENOMEM;
  int64_t widest = 0;
  for (size_t i = 0; i < cfg->n_csus; i++) {
    const struct csr_csu *c = &cfg->csus[i];
    uint64_t s = c->overlap_s > c->sweep_s ? c->overlap_s : c->sweep_s;
    hz[i] = (struct pl_state_horizon){.csu = c->name, .horizon_ms = (int64_t)s * 1000};
    if (hz[i].horizon_ms > widest)
      widest = hz[i].horizon_ms;
  }
  struct pl_state_opts so = {
      .horizons = hz, .n_horizons = cfg->n_csus, .default_horizon_ms = widest};
  int rc = pl_state_create(&so, &a->state);
  free(hz);
  if (rc == 0)
    rc = csr_jw_init(&a->jw);
  return rc;
}

static void free_partial(struct pl_admit *a) {
  pl_state_destroy(a->state);
  for (size_t i = 0; i < a->n_routes; i++)
    free(a->routes[i].sinks);
  free(a->routes);
  free(a->csu_st);
  csr_jw_free(&a->jw);
  free(a);
}

int pl_admit_open(struct rx_loop *loop, const struct csr_config *cfg,
                  const struct pl_store_opts *store_opts, const struct pl_admit_ops *ops, void *arg,
                  struct pl_admit **out, struct csr_err *err) {
  if (err)
    memset(err, 0, sizeof(*err));
  if (loop == NULL || cfg == NULL || out == NULL) {
    set_err(err, "a required argument is NULL", UV_EINVAL);
    return UV_EINVAL;
  }
  *out = NULL;
  struct pl_store_opts o;
  if (store_opts != NULL)
    o = *store_opts;
  else
    o = (struct pl_store_opts){.dir = cfg->state.dir,
                               .fsync = cfg->state.fsync,
                               .fsync_interval_ms = cfg->state.fsync_interval_ms};
  if (o.dir == NULL) {
    set_err(err, "no state directory", UV_EINVAL);
    return UV_EINVAL;
  }
  struct pl_admit *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return UV_ENOMEM;
  a->loop = loop;
  a->cfg = cfg;
  if (ops)
    a->ops = *ops;
  a->arg = arg;
  a->poll_ops = (struct pl_poll_ops){.on_page = on_page, .full = on_full, .on_cursor = on_cursor};
  int rc = build(a, cfg);
  if (rc < 0) {
    set_err(err, "setting up", rc);
    free_partial(a);
    return rc;
  }
  struct csr_err serr;
  rc = pl_store_open(loop, &o, pl_state_replay, pl_state_dump, a->state, &a->store, &serr);
  if (rc < 0) {
    const char *why = pl_state_error(a->state);
    if (err) {
      *err = serr;
      if (why[0] != '\0') {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof(err->msg) - n, "%s%s", n ? "; " : "", why);
      }
    }
    free_partial(a);
    return rc;
  }
  if (err)
    *err = serr;
  a->st.expired += pl_state_expire(a->state);
  struct pl_state_stats ss;
  pl_state_stats(a->state, &ss);
  const struct pl_store_stats *ts = pl_store_stats(a->store);
  if (serr.msg[0] != '\0')
    CSR_LOG(CSR_WARN, "admit: the store was damaged", CSR_KS("detail", serr.msg));
  CSR_LOG(CSR_INFO, "admit: state replayed", CSR_KS("dir", o.dir),
          CSR_KI("records", ts->records_replayed), CSR_KI("live", ss.live),
          CSR_KI("finished", ss.finished), CSR_KI("dead_letters", ss.dead_letters),
          CSR_KI("cursors", ss.cursors), CSR_KI("dup_admits", ss.dup_admits));
  *out = a;
  return 0;
}

const struct pl_poll_ops *pl_admit_poll_ops(const struct pl_admit *a) {
  return &a->poll_ops;
}

int pl_admit_cursors(struct pl_admit *a, struct pl_poll *poll) {
  const char *csu, *type;
  int64_t ms;
  for (size_t i = 0; pl_state_cursor_at(a->state, i, &csu, &type, &ms) == 0; i++) {
    int rc = pl_poll_set_cursor(poll, csu, type, ms);
    if (rc == UV_ENOENT)
      continue; /* a lane no longer configured */
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Room for what is live now; the memory budget also counts `coming` more (rows of Searches in
 * flight, at most). max_live_events does not: most of those rows are re-reads, and a live bound
 * lowered by every page in flight would hold admission far below it (test_it_sink_outage: 130
 * live under a limit of 500). The pages in flight may pass it, by one page per lane at most. */
static bool has_room_for(const struct pl_admit *a, uint64_t coming) {
  if (a->closing || a->fail_rc != 0)
    return false;
  if (a->ops.over_budget && a->ops.over_budget(a->arg, coming))
    return false;
  uint64_t max = a->cfg->limits.max_live_events;
  if (max == 0)
    return true;
  struct pl_state_stats ss;
  pl_state_stats(a->state, &ss);
  return ss.live - ss.parked < max;
}

bool pl_admit_has_room(const struct pl_admit *a) {
  return has_room_for(a, 0);
}

int pl_admit_csu_stats(const struct pl_admit *a, size_t i, struct pl_admit_csu_stats *out) {
  if (i >= a->cfg->n_csus)
    return UV_EINVAL;
  *out = a->csu_st[i];
  return 0;
}

struct pl_state *pl_admit_state(struct pl_admit *a) {
  return a->state;
}

struct pl_store *pl_admit_store(struct pl_admit *a) {
  return a->store;
}

void pl_admit_stats(const struct pl_admit *a, struct pl_admit_stats *out) {
  *out = a->st;
  struct pl_state_stats ss;
  pl_state_stats(a->state, &ss);
  out->live = ss.live;
  out->dead_letters = ss.dead_letters;
  out->store = *pl_store_stats(a->store);
  out->failed = a->fail_rc != 0;
  out->healthy = !out->failed && out->store.healthy;
  snprintf(out->health_reason, sizeof(out->health_reason), "%s",
           out->failed ? a->reason : out->store.health_reason);
}
