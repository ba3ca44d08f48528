/* The admit stage (src/pipeline/admit.c) between a real poll stage on csusim (in-process) and a
 * real store in a temp dir. The test wraps the admitter's poll ops to watch pages, cursors and
 * the store's fsync count. Scenarios: 2 CSUs for 3 s (the state holds exactly the ledger's ids,
 * repeats counted as duplicates, cursors recorded, every id reported only after an fsync that
 * followed its page); a restart on the same directory (same ids and cursors; a poll seeded from
 * them re-reads the overlap and admits nothing); an fsync failure (the page fails, admission stops
 * and says why, polling stops; a restart reads what is durable and completes the ledger);
 * backpressure with a small max_live_events and an unrouted type (polling pauses, the live count
 * stays within one page of the limit; finishing events and pl_poll_resume start it again); kill -9
 * (this binary run as --child polls and admits against our sim and is killed twice mid-flight:
 * every id it reported is in the replay, none is admitted or reported twice, and a final poll
 * from the replayed cursors completes the ledger). */
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "csurelay/log.h"
#include "csurelay/pipeline.h"
#include "csurelay/timefmt.h"
#include "pipeline/internal.h" /* pl__store_fail_next_fsync */
#include "polltest.h"

#define NCSU 2

/* ---------------------------------------------------------------------------------------------- */
/* Fixture */
/* ---------------------------------------------------------------------------------------------- */

struct fx {
  struct pt p;
  struct csr_delivery_conf deliver[2];
  struct csr_route routes[2];
  struct csr_config cfg;
  char dir[64];
  struct pl_store_opts sopts;
  struct pl_poll_opts popts;
  struct pl_poll *poll;
  struct pl_admit *adm;
  struct pl_poll_ops wrap;
  /* what the wrapper saw */
  struct sset reported; /* ids from on_admitted */
  uint64_t reported_twice, reported_unrouted;
  uint64_t fsyncs_at_page[NCSU][2]; /* the store's fsync count when the lane's page arrived */
  uint64_t reported_early;          /* reported with no fsync since their page arrived */
  int64_t cursor[NCSU][2];
  bool check_fsync;
  bool arm_fail;  /* make the fsync after the next page with new ids fail */
  uint64_t armed; /* times armed */
  uint64_t max_live;
  int stopped, closed;
};

static unsigned csu_index(const char *name) {
  unsigned i = (unsigned)atoi(name + 3);
  assert_true(i < NCSU);
  return i;
}

static const struct pl_poll_ops *aops(struct fx *f) {
  return pl_admit_poll_ops(f->adm);
}

static void note_live(struct fx *f) {
  struct pl_admit_stats s;
  pl_admit_stats(f->adm, &s);
  if (s.live > f->max_live)
    f->max_live = s.live;
}

static void w_on_page(void *arg, struct pl_poll_page *page) {
  struct fx *f = arg;
  f->fsyncs_at_page[csu_index(page->csu->name)][pt_type_index(page->type)] =
      pl_store_stats(pl_admit_store(f->adm))->fsyncs;
  if (f->arm_fail) {
    for (size_t i = 0; i < page->n; i++)
      if (!pl_state_seen(pl_admit_state(f->adm), page->events[i].id)) {
        pl__store_fail_next_fsync(pl_admit_store(f->adm), UV_EIO);
        f->armed++;
        break;
      }
  }
  aops(f)->on_page(f->adm, page);
  note_live(f);
}

static int w_full(void *arg, uint64_t rows_coming) {
  struct fx *f = arg;
  return aops(f)->full(f->adm, rows_coming);
}

static void w_on_cursor(void *arg, const struct csr_csu *csu, const char *type, int64_t ms) {
  struct fx *f = arg;
  int64_t *c = &f->cursor[csu_index(csu->name)][pt_type_index(type)];
  assert_true(ms > *c);
  *c = ms;
  aops(f)->on_cursor(f->adm, csu, type, ms);
}

static FILE *child_out; /* the kill -9 child: every reported id, one write each */

static void on_admitted(void *arg, const char *id) {
  struct fx *f = arg;
  if (child_out != NULL) {
    fprintf(child_out, "%s\n", id);
    fflush(child_out);
  }
  const struct pl_state_event *e = pl_state_event(pl_admit_state(f->adm), id);
  assert_non_null(e);
  assert_false(e->finished);
  assert_true(e->n_sinks > 0);
  if (!sset_add(&f->reported, id))
    f->reported_twice++;
  if (f->routes[pt_type_index(e->type)].n_deliver == 0)
    f->reported_unrouted++;
  if (f->check_fsync && pl_store_stats(pl_admit_store(f->adm))->fsyncs <=
                            f->fsyncs_at_page[csu_index(e->csu)][pt_type_index(e->type)])
    f->reported_early++;
}

static uint64_t stopped_logged;

/* The writer's line is `len` bytes, not NUL-terminated. */
static void capture(const char *line, size_t len, void *arg) {
  static const char stopped[] = "admission stopped until restart";
  stopped_logged += memmem(line, len, stopped, sizeof(stopped) - 1) != NULL;
}

/* Everything but the sim and the directory: CSUs at base_url, routes, config, the ops wrapper. */
static void fx_setup(struct fx *f, const char *base_url, enum csr_fsync fsync) {
  pt_setup(&f->p, base_url, NCSU, 10);
  f->deliver[0] = (struct csr_delivery_conf){.sink_name = "hook"};
  f->deliver[1] = (struct csr_delivery_conf){.sink_name = "cij"};
  f->routes[0] =
      (struct csr_route){.event_type = "AddCartLines", .deliver = f->deliver, .n_deliver = 1};
  f->routes[1] =
      (struct csr_route){.event_type = "Checkout", .deliver = f->deliver, .n_deliver = 2};
  f->cfg.csus = f->p.csus;
  f->cfg.n_csus = NCSU;
  f->cfg.routes = f->routes;
  f->cfg.n_routes = 2;
  f->cfg.limits.max_live_events = 100000;
  f->cfg.state.dir = f->dir;
  f->cfg.state.fsync = fsync;
  f->cfg.state.fsync_interval_ms = 5;
  f->popts = (struct pl_poll_opts){
      .timeout_ms = 1000, .backoff_base_ms = 100, .backoff_cap_ms = 1000, .seed = 7};
  f->wrap = (struct pl_poll_ops){.on_page = w_on_page, .full = w_full, .on_cursor = w_on_cursor};
}

static struct fx *fx_new(double rate, enum csr_fsync fsync) {
  struct fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  pt_start_sim(&f->p, NCSU, rate, NULL);
  fx_setup(f, f->p.t.sim.base_url, fsync);
  snprintf(f->dir, sizeof(f->dir), "/tmp/csr-admit-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  return f;
}

static void adm_open(struct fx *f) {
  struct csr_err err;
  struct pl_admit_ops ops = {.on_admitted = on_admitted};
  int rc = pl_admit_open(&f->p.t.loop, &f->cfg, NULL, &ops, f, &f->adm, &err);
  if (rc != 0)
    fail_msg("pl_admit_open: %s: %s", csr_strerror(rc), err.msg);
  assert_string_equal(err.msg, "");
}

static void poll_start(struct fx *f) {
  assert_int_equal(pl_poll_create(&f->p.t.loop, &f->p.t.http, f->p.csus, NCSU, pt_tokens_for, &f->p,
                                  &f->popts, &f->wrap, f, &f->poll),
                   0);
  assert_int_equal(pl_admit_cursors(f->adm, f->poll), 0);
  assert_int_equal(pl_poll_start(f->poll), 0);
}

static bool run_until(struct fx *f, bool (*cond)(struct fx *), uint64_t ms) {
  struct pt_guard g;
  pt_guard_start(&g, &f->p, ms);
  while (!(cond != NULL && cond(f)) && !g.expired) {
    uv_run(&f->p.t.uv, UV_RUN_ONCE);
    if (f->adm != NULL)
      note_live(f);
  }
  pt_guard_end(&g, &f->p);
  return cond != NULL && cond(f);
}

static void run_ms(struct fx *f, uint64_t ms) {
  run_until(f, NULL, ms);
}

static void on_stopped(void *arg) {
  ((struct fx *)arg)->stopped++;
}

static void on_closed(void *arg) {
  struct fx *f = arg;
  f->closed++;
  f->adm = NULL;
}

static bool is_stopped(struct fx *f) {
  return f->stopped > 0;
}

static bool is_closed(struct fx *f) {
  return f->closed > 0;
}

/* Stops the poll stage (the admitter answers its held pages), then closes the admitter. */
static void fx_close(struct fx *f) {
  if (f->poll != NULL) {
    f->stopped = 0;
    pl_poll_stop(f->poll, on_stopped, f);
    assert_true(run_until(f, is_stopped, 5000));
    f->poll = NULL;
  }
  if (f->adm != NULL) {
    f->closed = 0;
    pl_admit_close(f->adm, on_closed, f);
    assert_int_equal(f->closed, 0); /* never from inside the call */
    assert_true(run_until(f, is_closed, 5000));
    f->adm = NULL;
  }
}

static void fx_free(struct fx *f) {
  fx_close(f);
  pt_stop(&f->p);
  DIR *d = opendir(f->dir);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') {
      char p[512];
      snprintf(p, sizeof(p), "%s/%s", f->dir, de->d_name);
      unlink(p);
    }
  if (d)
    closedir(d);
  assert_int_equal(rmdir(f->dir), 0);
  sset_free(&f->reported);
  free(f);
}

static struct pl_admit_stats adm_stats(struct fx *f) {
  struct pl_admit_stats s;
  pl_admit_stats(f->adm, &s);
  return s;
}

static uint64_t known(struct fx *f) {
  struct pl_state_stats s;
  pl_state_stats(pl_admit_state(f->adm), &s);
  return s.live + s.finished;
}

static bool caught_up(struct fx *f) {
  return known(f) >= pt_generated(&f->p);
}

static bool none_held(struct fx *f) {
  struct pl_admit_stats s;
  pl_admit_stats(f->adm, &s);
  return s.held == 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* The ledger */
/* ---------------------------------------------------------------------------------------------- */

/* The state knows exactly the ledger's ids, each once (the dedupe set cannot hold one twice, so
 * equal counts and every ledger id seen means equal sets). Returns the number. */
static size_t check_ledger(struct fx *f) {
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, false, &v), missing = 0;
  const struct pl_state *s = pl_admit_state(f->adm);
  for (size_t i = 0; i < n; i++)
    if (!pl_state_seen(s, v[i].id) && missing++ < 5)
      print_message("missing: %s\n", v[i].id);
  assert_int_equal(missing, 0);
  assert_int_equal(known(f), n);
  free(v);
  return n;
}

/* Whether every lane's cursor, as the poll stage has it, is recorded in the state. */
static bool cursors_recorded(struct fx *f) {
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s;
    int64_t c;
    if (pl_poll_stats(f->poll, i, &s) < 0 ||
        pl_state_cursor(pl_admit_state(f->adm), s.csu, s.type, &c) < 0 || c != s.cursor_ms)
      return false;
  }
  return true;
}

/* Every lane's cursor is recorded in the state, equal to the poll stage's and to what on_cursor
 * reported, and past the lane's last event. A cursor is reported once the overlap re-read behind
 * it is done (a few ms after each regular window): the check waits for a moment when all are. */
static void check_cursors(struct fx *f) {
  struct pt_lev *v;
  size_t n = pt_ledger_events(&f->p, false, &v);
  int64_t last[NCSU][2] = {{0}};
  pt_ledger_last(v, n, last);
  free(v);
  for (int tries = 0; tries < 100 && !cursors_recorded(f); tries++)
    run_ms(f, 20);
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats s;
    assert_int_equal(pl_poll_stats(f->poll, i, &s), 0);
    int64_t c;
    assert_int_equal(pl_state_cursor(pl_admit_state(f->adm), s.csu, s.type, &c), 0);
    assert_int_equal(c, s.cursor_ms);
    assert_int_equal(c, f->cursor[csu_index(s.csu)][pt_type_index(s.type)]);
    assert_true(c >= last[csu_index(s.csu)][pt_type_index(s.type)]);
  }
}

static bool cursors_past_now(struct fx *f) {
  int64_t target = rx_wall_ms() - 3000;
  for (unsigned c = 0; c < NCSU; c++)
    for (int t = 0; t < 2; t++)
      if (f->cursor[c][t] < target)
        return false;
  return true;
}

/* ---------------------------------------------------------------------------------------------- */
/* Scenarios */
/* ---------------------------------------------------------------------------------------------- */

/* Every lane completed a window and duplicates were read. */
static bool windows_done(struct fx *f) {
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats ps;
    assert_int_equal(pl_poll_stats(f->poll, i, &ps), 0);
    if (ps.windows == 0)
      return false;
  }
  struct pl_admit_stats s;
  pl_admit_stats(f->adm, &s);
  return s.duplicates > 0;
}

/* 2 CSUs for 3 s with fsync=always, then a restart on the same directory. */
static void test_admit_and_restart(void **state) {
  struct fx *f = fx_new(100, CSR_FSYNC_ALWAYS);
  adm_open(f);
  f->check_fsync = true;
  poll_start(f);
  run_ms(f, 3000);
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(run_until(f, caught_up, 10000));
  assert_true(run_until(f, cursors_past_now, 5000));
  assert_true(run_until(f, none_held, 2000));
  size_t n = check_ledger(f);
  check_cursors(f);
  struct pl_admit_stats s = adm_stats(f);
  print_message(
      "ledger %zu: admitted %llu, duplicates %llu, pages %llu, cursors %llu, fsyncs %llu\n", n,
      (unsigned long long)s.admitted, (unsigned long long)s.duplicates, (unsigned long long)s.pages,
      (unsigned long long)s.cursors, (unsigned long long)s.store.fsyncs);
  assert_true(n > 100);
  assert_int_equal(s.admitted, n);
  assert_int_equal(s.live, n);   /* nothing finishes them here */
  assert_true(s.duplicates > 0); /* the overlap reads every window's last 10 s again */
  assert_int_equal(s.rows, s.admitted + s.duplicates);
  assert_int_equal(s.page_failures, 0);
  assert_int_equal(s.held, 0);
  assert_true(s.healthy);
  assert_string_equal(s.health_reason, "");
  /* every id was reported once, and only after an fsync that followed its page's arrival */
  assert_int_equal(f->reported.n, n);
  assert_int_equal(f->reported_twice, 0);
  assert_int_equal(f->reported_early, 0);

  /* restart: the same ids and cursors come back from the file */
  int64_t cursors[NCSU][2];
  memcpy(cursors, f->cursor, sizeof(cursors));
  fx_close(f);
  adm_open(f);
  s = adm_stats(f);
  assert_true(s.store.records_replayed >= n + 4); /* the ADMITs and at least a CURSOR per lane */
  assert_int_equal(s.live, n);
  for (unsigned c = 0; c < NCSU; c++)
    for (int t = 0; t < 2; t++) {
      int64_t ms;
      assert_int_equal(pl_state_cursor(pl_admit_state(f->adm), f->p.names[c], f->p.types[t], &ms),
                       0);
      assert_int_equal(ms, cursors[c][t]);
    }
  /* a poll seeded from them starts at the cursors, re-reads the overlap and admits nothing */
  assert_int_equal(pl_poll_create(&f->p.t.loop, &f->p.t.http, f->p.csus, NCSU, pt_tokens_for, &f->p,
                                  &f->popts, &f->wrap, f, &f->poll),
                   0);
  assert_int_equal(pl_admit_cursors(f->adm, f->poll), 0);
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats ps;
    assert_int_equal(pl_poll_stats(f->poll, i, &ps), 0);
    assert_int_equal(ps.cursor_ms, cursors[csu_index(ps.csu)][pt_type_index(ps.type)]);
  }
  assert_int_equal(pl_poll_start(f->poll), 0);
  assert_true(run_until(f, windows_done, 10000));
  check_ledger(f);
  s = adm_stats(f);
  print_message("after restart: pages %llu, duplicates %llu, admitted %llu\n",
                (unsigned long long)s.pages, (unsigned long long)s.duplicates,
                (unsigned long long)s.admitted);
  assert_true(s.pages > 0 && s.duplicates > 0);
  assert_int_equal(s.admitted, 0);
  assert_int_equal(s.rows, s.duplicates);
  assert_int_equal(f->reported_twice, 0);
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats ps;
    assert_int_equal(pl_poll_stats(f->poll, i, &ps), 0);
    assert_true(ps.windows > 0);
    assert_int_equal(ps.admit_failures, 0);
  }
  fx_free(f);
}

static bool admitted_some(struct fx *f) {
  return adm_stats(f).admitted > 0;
}

static bool is_full(struct fx *f) {
  return adm_stats(f).full > 0;
}

static bool admission_failed(struct fx *f) {
  return adm_stats(f).failed;
}

/* The fsync after a page with new ids fails: that page is answered with the error and admission
 * stops until a restart, which reads what is durable and completes the ledger. */
static void test_fsync_failure(void **state) {
  struct fx *f = fx_new(60, CSR_FSYNC_ALWAYS);
  csr_log_set_writer(capture, NULL); /* the failure is logged on purpose */
  adm_open(f);
  poll_start(f);
  assert_true(run_until(f, admitted_some, 8000));
  uint64_t reported = f->reported.n;
  f->arm_fail = true;
  assert_true(run_until(f, admission_failed, 5000));
  f->arm_fail = false;
  struct pl_admit_stats s = adm_stats(f);
  print_message("failed after %llu armings: %s\n", (unsigned long long)f->armed, s.health_reason);
  assert_false(s.healthy);
  assert_false(s.store.healthy);
  assert_non_null(strstr(s.health_reason, "ADMIT not durable"));
  assert_int_equal(stopped_logged, 1);
  run_ms(f, 1200); /* past the Search timeout: nothing is in flight any more */
  s = adm_stats(f);
  assert_true(s.page_failures >= 1);
  uint64_t lane_failures = 0;
  for (size_t i = 0; i < pl_poll_lanes(f->poll); i++) {
    struct pl_poll_stats ps;
    assert_int_equal(pl_poll_stats(f->poll, i, &ps), 0);
    lane_failures += ps.admit_failures;
  }
  assert_true(lane_failures >= 1);
  assert_false(pl_admit_has_room(f->adm));
  /* no Search starts any more, and nothing more is reported */
  uint64_t searches = pt_search_requests(&f->p), cursors = s.cursors;
  reported = f->reported.n;
  run_ms(f, 1500);
  assert_int_equal(pt_search_requests(&f->p), searches);
  assert_int_equal(f->reported.n, reported);
  assert_int_equal(adm_stats(f).cursors, cursors);
  sim_csus_stop(f->p.t.sim.csus);

  /* restart: the replay holds what reached the file; the windows not passed are read again */
  fx_close(f);
  adm_open(f);
  s = adm_stats(f);
  assert_true(s.healthy);
  poll_start(f);
  assert_true(run_until(f, caught_up, 10000));
  assert_true(run_until(f, cursors_past_now, 5000));
  assert_true(run_until(f, none_held, 2000));
  check_ledger(f);
  check_cursors(f);
  assert_int_equal(adm_stats(f).page_failures, 0);
  fx_free(f);
}

/* Finishes every live event: a delivered OUTCOME per sink, appended then applied (as the route
 * stage will). Returns how many events finished. */
static size_t finish_all(struct fx *f) {
  struct pl_state *st = pl_admit_state(f->adm);
  struct pl_store *store = pl_admit_store(f->adm);
  struct csr_jw jw;
  assert_int_equal(csr_jw_init(&jw), 0);
  size_t n = 0;
  const struct pl_state_event *e;
  while ((e = pl_state_live_next(st, NULL)) != NULL) {
    char id[192];
    snprintf(id, sizeof(id), "%s", e->id);
    size_t sinks = e->n_sinks;
    for (size_t i = 0; i < sinks; i++) {
      e = pl_state_event(st, id);
      struct pl_rec_delivery d = {.id = id,
                                  .sink = e->sinks[i].sink,
                                  .outcome = SK_DELIVERED,
                                  .attempt = 1,
                                  .at_ms = rx_wall_ms(),
                                  .status = 200};
      const char *text;
      size_t len;
      csr_jw_reset(&jw);
      assert_int_equal(pl_rec_outcome(&jw, &d), 0);
      assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
      assert_int_equal(pl_store_append(store, PL_REC_OUTCOME, text, len, NULL, NULL), 0);
      assert_int_equal(pl_state_apply(st, PL_REC_OUTCOME, text, len), 0);
    }
    n++;
  }
  csr_jw_free(&jw);
  return n;
}

/* max_live_events 30, one Search at a time, pages of 25; Checkout has no route (admitted with no
 * sinks, finished at once, never reported). */
static void test_backpressure(void **state) {
  struct fx *f = fx_new(100, CSR_FSYNC_BATCH);
  f->cfg.limits.max_live_events = 30;
  f->cfg.n_routes = 1;        /* no route for Checkout */
  f->routes[1].n_deliver = 0; /* (for on_admitted's check) */
  f->popts.max_searches = 1;
  f->popts.wide_top = 25;
  for (unsigned i = 0; i < NCSU; i++)
    f->p.csus[i].overlap_s = 30; /* the finished ids' horizon outlasts the test */
  csr_log_set_level(CSR_ERROR);  /* the unrouted warning */
  adm_open(f);
  poll_start(f);
  assert_true(run_until(f, is_full, 10000));
  run_ms(f, 1200); /* past the Search timeout: the Search in flight, if any, ended */
  struct pl_admit_stats s = adm_stats(f);
  assert_false(pl_admit_has_room(f->adm));
  assert_true(s.live >= 30);
  uint64_t searches = pt_search_requests(&f->p), pages = s.pages;
  run_ms(f, 1000);
  assert_int_equal(pt_search_requests(&f->p), searches); /* polling paused */
  assert_int_equal(adm_stats(f).pages, pages);
  assert_true(adm_stats(f).full > s.full); /* asked tick by tick */
  print_message("max live %llu (limit 30, page 25)\n", (unsigned long long)f->max_live);
  assert_true(f->max_live < 30 + 25);
  sim_csus_stop(f->p.t.sim.csus);
  assert_true(known(f) < pt_generated(&f->p));

  /* the route stage finishes events and says there is room: polling resumes */
  for (int round = 0; round < 200 && !caught_up(f); round++) {
    if (!pl_admit_has_room(f->adm)) {
      /* as the route stage would: only events reported admitted (durable) are finished */
      assert_true(run_until(f, none_held, 2000));
      assert_true(finish_all(f) > 0);
      assert_true(pl_admit_has_room(f->adm));
      pl_poll_resume(f->poll);
    }
    run_ms(f, 50);
    assert_true(f->max_live < 30 + 25);
  }
  assert_true(caught_up(f));
  assert_true(run_until(f, none_held, 2000)); /* the last page's records are durable */
  assert_true(pt_search_requests(&f->p) > searches);
  check_ledger(f);
  s = adm_stats(f);
  print_message("unrouted %llu of %llu admitted\n", (unsigned long long)s.unrouted,
                (unsigned long long)s.admitted);
  assert_true(s.unrouted > 0);
  assert_int_equal(f->reported_unrouted, 0);
  assert_int_equal(f->reported.n, s.admitted - s.unrouted);
  assert_int_equal(s.page_failures, 0);
  assert_true(s.healthy);
  fx_free(f);
}

/* The API's refusals and the seeding of cursors for lanes no longer configured. */
static void test_api(void **state) {
  struct fx *f = fx_new(0, CSR_FSYNC_NONE);
  struct pl_admit *a = NULL;
  struct csr_err err;
  assert_int_equal(pl_admit_open(NULL, &f->cfg, NULL, NULL, NULL, &a, &err), UV_EINVAL);
  assert_int_equal(pl_admit_open(&f->p.t.loop, NULL, NULL, NULL, NULL, &a, &err), UV_EINVAL);
  f->cfg.state.dir = NULL;
  assert_int_equal(pl_admit_open(&f->p.t.loop, &f->cfg, NULL, NULL, NULL, &a, &err), UV_EINVAL);
  assert_non_null(strstr(err.msg, "directory"));
  f->cfg.state.dir = f->dir;
  assert_null(a);
  /* a cursor of a lane that is gone is skipped when seeding */
  adm_open(f);
  struct csr_jw jw;
  const char *text;
  size_t len;
  assert_int_equal(csr_jw_init(&jw), 0);
  assert_int_equal(pl_rec_cursor(&jw, "gone", "Checkout", 1000), 0);
  assert_int_equal(csr_jw_finish(&jw, &text, &len), 0);
  assert_int_equal(pl_store_append(pl_admit_store(f->adm), PL_REC_CURSOR, text, len, NULL, NULL),
                   0);
  assert_int_equal(pl_state_apply(pl_admit_state(f->adm), PL_REC_CURSOR, text, len), 0);
  csr_jw_free(&jw);
  assert_int_equal(pl_poll_create(&f->p.t.loop, &f->p.t.http, f->p.csus, NCSU, pt_tokens_for, &f->p,
                                  &f->popts, &f->wrap, f, &f->poll),
                   0);
  assert_int_equal(pl_admit_cursors(f->adm, f->poll), 0);
  assert_true(pl_admit_has_room(f->adm));
  pl_admit_close(f->adm, on_closed, f);
  pl_admit_close(f->adm, on_closed, f); /* ignored */
  assert_false(pl_admit_has_room(f->adm));
  assert_true(run_until(f, is_closed, 5000));
  assert_int_equal(f->closed, 1);
  f->adm = NULL;
  /* reopened, the gone lane's cursor is still in the state */
  adm_open(f);
  int64_t ms;
  assert_int_equal(pl_state_cursor(pl_admit_state(f->adm), "gone", "Checkout", &ms), 0);
  assert_int_equal(ms, 1000);
  fx_free(f);
}

/* ---------------------------------------------------------------------------------------------- */
/* kill -9: a child process (this binary, --child) polls and admits against our sim               */
/* ---------------------------------------------------------------------------------------------- */

extern char **environ;

/* The child: poll + admit with fsync=always into `dir`, every reported id appended to
 * dir/reported.txt, until it is killed. */
static int child_main(const char *base_url, const char *dir) {
  static struct fx f;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
    return 1; /* never outlive the test */
  csr_log_set_level(CSR_WARN);
  assert_int_equal(uv_loop_init(&f.p.t.uv), 0);
  assert_int_equal(rx_loop_init(&f.p.t.loop, &f.p.t.uv), 0);
  struct rx_http_opts hopts = {.max_per_host = 16, .timeout_ms = 10000};
  assert_int_equal(rx_http_init(&f.p.t.http, &f.p.t.loop, &hopts), 0);
  snprintf(f.dir, sizeof(f.dir), "%s", dir);
  fx_setup(&f, base_url, CSR_FSYNC_ALWAYS);
  char path[128];
  snprintf(path, sizeof(path), "%s/reported.txt", dir);
  child_out = fopen(path, "a");
  assert_non_null(child_out);
  struct csr_err err;
  struct pl_admit_ops ops = {.on_admitted = on_admitted};
  assert_int_equal(pl_admit_open(&f.p.t.loop, &f.cfg, NULL, &ops, &f, &f.adm, &err), 0);
  poll_start(&f);
  for (int i = 0; i < 1000000; i++) /* killed long before; the poll's timers keep it running */
    rx_loop_run(&f.p.t.loop);
  return 1;
}

static pid_t spawn_child(struct fx *f) {
  char self[512];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  assert_true(n > 0);
  self[n] = '\0';
  char *argv[] = {self, "--child", f->p.t.sim.base_url, f->dir, NULL};
  pid_t pid;
  assert_int_equal(posix_spawn(&pid, self, NULL, NULL, argv, environ), 0);
  return pid;
}

/* The ids the children reported, in order; asserts none was reported twice. */
static size_t read_reported(struct fx *f, struct sset *out) {
  char path[128], line[256];
  snprintf(path, sizeof(path), "%s/reported.txt", f->dir);
  FILE *in = fopen(path, "r");
  size_t n = 0;
  while (in != NULL && fgets(line, sizeof(line), in) != NULL) {
    size_t len = strlen(line);
    if (len == 0 || line[len - 1] != '\n')
      continue; /* a line cut by the kill */
    line[len - 1] = '\0';
    if (!sset_add(out, line))
      fail_msg("reported twice: %s", line);
    n++;
  }
  if (in != NULL)
    fclose(in);
  return n;
}

/* Two children are killed with SIGKILL mid-flight, one after the other on the same directory.
 * After each kill the replay holds every id a child reported (reported = durable), admits none
 * twice, and no id was reported twice across children. Then this process polls from the
 * replayed cursors and the state equals the ledger. */
static void test_kill9(void **state) {
  struct fx *f = fx_new(100, CSR_FSYNC_ALWAYS);
  csr_log_set_level(CSR_WARN);
  size_t reported = 0;
  for (int round = 0; round < 2; round++) {
    pid_t pid = spawn_child(f);
    run_ms(f, 1500 + 700 * (uint64_t)round);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    struct sset ids = {0};
    size_t n = read_reported(f, &ids);
    struct csr_err err;
    struct pl_admit_ops ops = {.on_admitted = on_admitted};
    int rc = pl_admit_open(&f->p.t.loop, &f->cfg, NULL, &ops, f, &f->adm, &err);
    if (rc != 0)
      fail_msg("pl_admit_open: %s: %s", csr_strerror(rc), err.msg);
    struct pl_admit_stats s = adm_stats(f);
    struct pl_state_stats ss;
    pl_state_stats(pl_admit_state(f->adm), &ss);
    print_message("round %d: %zu reported, %llu live, %llu records, torn %llu (%s)\n", round, n,
                  (unsigned long long)s.live, (unsigned long long)s.store.records_replayed,
                  (unsigned long long)s.store.torn_tails, err.msg);
    assert_true(n > reported); /* this child admitted something */
    assert_true(s.store.corrupt_regions == 0);
    assert_int_equal(ss.dup_admits, 0);
    for (size_t i = 0; i < ids.cap; i++)
      if (ids.slots[i] != NULL) {
        const struct pl_state_event *e = pl_state_event(pl_admit_state(f->adm), ids.slots[i]);
        if (e == NULL)
          fail_msg("reported but not durable: %s", ids.slots[i]);
        assert_false(e->finished);
      }
    assert_true(s.live >= n);
    reported = n;
    sset_free(&ids);
    fx_close(f);
  }
  sim_csus_stop(f->p.t.sim.csus);
  adm_open(f);
  poll_start(f);
  assert_true(run_until(f, caught_up, 10000));
  assert_true(run_until(f, cursors_past_now, 5000));
  assert_true(run_until(f, none_held, 2000));
  size_t n = check_ledger(f);
  struct pl_state_stats ss;
  pl_state_stats(pl_admit_state(f->adm), &ss);
  assert_int_equal(ss.dup_admits, 0);
  assert_int_equal(ss.live, n);
  /* what this process admitted was not reported by a child */
  struct sset ids = {0};
  read_reported(f, &ids);
  for (size_t i = 0; i < f->reported.cap; i++)
    if (f->reported.slots[i] != NULL && !sset_add(&ids, f->reported.slots[i]))
      fail_msg("admitted twice: %s", f->reported.slots[i]);
  sset_free(&ids);
  fx_free(f);
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--child") == 0)
    return child_main(argv[2], argv[3]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api),           cmocka_unit_test(test_admit_and_restart),
      cmocka_unit_test(test_fsync_failure), cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_kill9),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
